"""The HL7 v2 message: a lazy parse, field access by path, and exact serialization.

Parsing does the least it can: the bytes are decoded once (in the MSH-18
character set) and cut into segment lines; a segment's fields are split the
first time something reads them, and a leaf is unescaped only when read. That
is what makes a parse to the model an order of magnitude faster than building
the whole tree.

Paths follow the usual terser notation, 1-based throughout:
`PID-3` (first repetition, first component), `PID-3[2].1` (second repetition,
component 1), `OBX[3]-5` (third OBX), `PID-5.1.2` (a subcomponent).

Absent and empty are different: a field beyond the end of its segment is
absent (`None`); `||` is present and empty (`""`); `|""|` is the HL7 null
(`NULL`), which tells the receiver to delete the value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any, final

from engine.core.errors import CharsetError, ErrorLocation, EscapeError, HeaderError, HL7Error, MissingFieldError
from engine.core.hl7.encoding import (
    DEFAULT_DELIMITERS,
    CharsetDefaults,
    Delimiters,
    codec_for_charset,
    decode_text,
    escape,
    unescape,
)
from engine.core.model import InvalidText

__all__ = ["NULL", "Message", "Path", "Segment", "parse", "parse_path"]

_UTF8 = CharsetDefaults()

NULL = '""'
BOM = b"\xef\xbb\xbf"
# Header segments that declare delimiters like MSH does.
_HEADERS = ("MSH", "FHS", "BHS")


@final
class Path:
    """A parsed terser path; build with `parse_path`."""

    __slots__ = ("component", "field", "repetition", "segment", "sequence", "subcomponent")

    def __init__(
        self, segment: str, *, sequence: int, field: int, repetition: int, component: int, subcomponent: int
    ) -> None:
        self.segment = segment
        self.sequence = sequence
        self.field = field
        self.repetition = repetition
        self.component = component
        self.subcomponent = subcomponent


_PATH_RE = re.compile(r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?-(\d+)(?:\[(\d+)\])?(?:\.(\d+))?(?:\.(\d+))?")


@functools.lru_cache(maxsize=1024)
def parse_path(path: str) -> Path:
    """Parse `SEG[n]-field[rep].component.subcomponent` (all indexes 1-based).

    Raises:
        ValueError: the path is not of that form (a programming error, not input).
    """
    m = _PATH_RE.fullmatch(path)
    if m is None or any(g is not None and int(g) < 1 for g in m.groups()[1:]):
        raise ValueError(f"not an HL7 path: {path!r} (expected e.g. PID-3[2].1 or OBX[3]-5)")
    seg, seq, fld, rep, comp, sub = m.groups()
    return Path(
        seg,
        sequence=int(seq or 1),
        field=int(fld),
        repetition=int(rep or 1),
        component=int(comp or 1),
        subcomponent=int(sub or 1),
    )


@final
class Segment:
    """One segment line; fields are split on first access.

    Field numbers are HL7's: for MSH, field 1 is the field separator itself and
    field 2 the encoding characters, so `MSH-9` is the message type as in the
    standard.
    """

    __slots__ = ("_codec", "_d", "_fields", "_header", "_line", "id")

    def __init__(self, line: str, d: Delimiters, codec: str) -> None:
        self.id = line[:3]
        self._header = self.id in _HEADERS
        self._line: str | None = line
        self._fields: list[str] | None = None
        self._d = d
        self._codec = codec

    @property
    def line(self) -> str:
        """The segment as text (rebuilt if a field was set)."""
        if self._line is None:
            fields = self._split()
            if self._header:
                self._line = fields[0] + self._d.field + self._d.field.join(fields[2:])
            else:
                self._line = self._d.field.join(fields)
        return self._line

    def _split(self) -> list[str]:
        if self._fields is None:
            line = self.line
            fields = line.split(self._d.field)
            if self._header:
                # MSH-1 is the separator itself: put it back so numbers match HL7's.
                fields.insert(1, self._d.field)
            self._fields = fields
        return self._fields

    def __len__(self) -> int:
        """The number of the last field present."""
        return len(self._split()) - 1

    def field(self, n: int) -> str | None:
        """Field `n` as written (escaped, with its repetitions); None if absent."""
        fields = self._fields if self._fields is not None else self._split()
        return fields[n] if 0 < n < len(fields) else None

    def repetitions(self, n: int) -> list[str]:
        """The repetitions of field `n`, as written; [] if absent or empty."""
        raw = self.field(n)
        if not raw:
            return []
        if self._header and n <= 2:
            return [raw]
        return raw.split(self._d.repetition)

    def value(self, n: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str | None:
        """The unescaped text of one leaf; None if absent.

        Raises:
            EscapeError: the leaf holds a malformed escape sequence (the error
                names this segment and field).
        """
        fields = self._fields if self._fields is not None else self._split()
        if not 0 < n < len(fields):
            return None
        raw = fields[n]
        if n <= 2 and self._header:
            return raw
        d = self._d
        if rep > 1 or d.repetition in raw:
            reps = raw.split(d.repetition)
            if rep > len(reps):
                return None
            raw = reps[rep - 1]
        if comp > 1 or d.component in raw:
            comps = raw.split(d.component)
            if comp > len(comps):
                return None
            raw = comps[comp - 1]
        if sub > 1 or d.subcomponent in raw:
            subs = raw.split(d.subcomponent)
            if sub > len(subs):
                return None
            raw = subs[sub - 1]
        return self._unescape(raw, n) if d.escape in raw else raw

    def components(self, n: int, rep: int = 1) -> list[str]:
        """The unescaped components of one repetition (first subcomponent of each)."""
        reps = self.repetitions(n)
        if rep > len(reps):
            return []
        d = self._d
        out = []
        for comp in reps[rep - 1].split(d.component):
            leaf = comp.split(d.subcomponent, 1)[0] if d.subcomponent in comp else comp
            out.append(self._unescape(leaf, n))
        return out

    def _unescape(self, raw: str, n: int) -> str:
        if self._d.escape not in raw:
            return raw
        try:
            return unescape(raw, self._d, self._codec)
        except EscapeError as exc:
            raise exc.located(segment=self.id, field=n) from None

    def set(self, n: int, value: str, rep: int = 1, comp: int = 1, sub: int = 1) -> None:
        """Write one leaf (escaping it), adding empty fields/components as needed."""
        if self._header and n <= 2:
            raise ValueError("MSH-1 and MSH-2 are fixed by the delimiters")
        d = self._d
        fields = self._split()
        while len(fields) <= n:
            fields.append("")
        reps = fields[n].split(d.repetition)
        _pad(reps, rep)
        comps = reps[rep - 1].split(d.component)
        _pad(comps, comp)
        subs = comps[comp - 1].split(d.subcomponent)
        _pad(subs, sub)
        subs[sub - 1] = escape(value, d)
        comps[comp - 1] = d.subcomponent.join(subs)
        reps[rep - 1] = d.component.join(comps)
        fields[n] = d.repetition.join(reps)
        self._line = None


def _pad(parts: list[str], count: int) -> None:
    while len(parts) < count:
        parts.append("")


@final
class Message:
    """A parsed HL7 v2 message; serializes back to the exact bytes it came from.

    Build one with `parse` (from bytes) or `Message.new` (from segment lines).
    `trailing` counts the terminators after the last segment (usually 1).
    `invalid_text` is set when bytes not valid in its (undeclared) character
    set were replaced: such a message does not serialize back to its bytes.
    """

    __slots__ = ("_index", "_segments", "bom", "codec", "delimiters", "invalid_text", "terminator", "trailing")

    def __init__(
        self,
        lines: list[str],
        delimiters: Delimiters = DEFAULT_DELIMITERS,
        codec: str = "utf-8",
        terminator: str = "\r",
        *,
        bom: bool = False,
        trailing: int = 1,
    ) -> None:
        self.delimiters = delimiters
        self.codec = codec
        self.terminator = terminator
        self.bom = bom
        self.trailing = trailing
        self._segments = [Segment(line, delimiters, codec) for line in lines]
        self._index: dict[str, list[Segment]] | None = None
        self.invalid_text: InvalidText | None = None

    @classmethod
    def new(cls, lines: list[str], codec: str = "utf-8") -> Message:
        """A message from segment lines whose first line is an MSH with its delimiters."""
        first = lines[0]
        d = Delimiters.from_header(first[3], first[4 : first.find(first[3], 4)])
        return cls(lines, d, codec)

    @property
    def segments(self) -> list[Segment]:
        """Every segment, in order."""
        return self._segments

    def _by_id(self) -> dict[str, list[Segment]]:
        if self._index is None:
            index: dict[str, list[Segment]] = {}
            for seg in self._segments:
                index.setdefault(seg.id, []).append(seg)
            self._index = index
        return self._index

    def segment(self, seg_id: str, sequence: int = 1) -> Segment | None:
        """The `sequence`-th segment with this id (1-based), or None."""
        found = self._by_id().get(seg_id)
        if found is None or sequence > len(found):
            return None
        return found[sequence - 1]

    def all(self, seg_id: str) -> list[Segment]:
        """Every segment with this id, in order."""
        return self._by_id().get(seg_id, [])

    def get(self, path: str) -> str | None:
        """The unescaped value at a terser path (`PID-3[2].1`); None if absent."""
        p = parse_path(path)
        seg = self.segment(p.segment, p.sequence)
        if seg is None:
            return None
        return seg.value(p.field, p.repetition, p.component, p.subcomponent)

    def set(self, path: str, value: str) -> None:
        """Write the value at a terser path; the segment must exist."""
        p = parse_path(path)
        seg = self.segment(p.segment, p.sequence)
        if seg is None:
            raise KeyError(f"no segment {p.segment}[{p.sequence}] in the message")
        seg.set(p.field, value, p.repetition, p.component, p.subcomponent)

    def append(self, line: str) -> Segment:
        """Add a segment at the end (its text as written, already escaped)."""
        seg = Segment(line, self.delimiters, self.codec)
        self._segments.append(seg)
        self._index = None
        return seg

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._segments)

    # Header shortcuts, named for what they hold.
    @property
    def message_type(self) -> str:
        """MSH-9 as `CODE^EVENT` (`ORU^R01`), or just the code when no event."""
        msh = self._segments[0]
        code = msh.value(9, 1, 1) or ""
        event = msh.value(9, 1, 2) or ""
        return f"{code}^{event}" if event else code

    @property
    def control_id(self) -> str:
        """MSH-10, the sender's id for this message."""
        return self._segments[0].value(10) or ""

    @property
    def version(self) -> str:
        """MSH-12, the HL7 version (`2.5.1`)."""
        return self._segments[0].value(12) or ""

    def to_text(self) -> str:
        """The message as text, with its own segment terminator."""
        text = self.terminator.join(seg.line for seg in self._segments)
        return text + self.terminator * self.trailing

    def to_bytes(self) -> bytes:
        """The message as bytes, in its own character set (BOM kept if it had one)."""
        body = self.to_text().encode(self.codec)
        return BOM + body if self.bom else body

    def segment_offset(self, index: int) -> int:
        """The byte offset of segment `index` (0-based) in `to_bytes()`."""
        head = self.terminator.join(seg.line for seg in self._segments[:index])
        if index:
            head += self.terminator
        return len(head.encode(self.codec)) + (len(BOM) if self.bom else 0)


_TERMINATORS = re.compile(r"\r\n|\r|\n")


def parse(raw: bytes, charsets: CharsetDefaults = _UTF8) -> Message:
    """Parse one HL7 v2 message (not a batch: see `engine.core.hl7.batch`).

    Accepts `\\r`, `\\n` or `\\r\\n` segment terminators and a UTF-8 BOM. The
    text is decoded in the MSH-18 character set; with none declared, in the
    sender's or the node's default (`charsets`, UTF-8 unless configured).

    Valid text is never decoded twice in another character set. Bytes that
    are not valid in a declared character set refuse the message (the sender
    said what it sends, and it is not that); in an undeclared one they become
    U+FFFD, and `Message.invalid_text` says how many and where the first was,
    so the node can count and report it while the message (a critical result,
    say) still flows, its original bytes kept whole in the log.

    Raises:
        HeaderError, CharsetError, HL7Error: the message is malformed; the
            error names the byte offset, segment and field it could.
    """
    bom = raw.startswith(BOM)
    start = len(BOM) if bom else 0
    if raw[start : start + 3] != b"MSH":
        raise HeaderError("message does not start with an MSH segment", ErrorLocation(byte_offset=start))
    if len(raw) < start + 8:
        raise HeaderError(
            "MSH segment is truncated before its encoding characters", ErrorLocation(byte_offset=start, segment="MSH")
        )
    fs = chr(raw[start + 3])
    header = _header_fields(raw, start, fs)
    declared = _declared_codec(header, start)
    invalid: InvalidText | None = None
    if declared is not None:
        codec = declared
        try:
            text = decode_text(raw[start:], declared, start)
        except CharsetError as exc:
            where = _where(raw, exc.location.byte_offset or start, fs)
            raise CharsetError(exc.reason, ErrorLocation(**where)) from None
    else:
        codec = charsets.codec_for(_at(header, 2), _at(header, 3)) if charsets.senders else charsets.default
        text, invalid = _decode_replacing(raw, start, codec, fs)
    enc_end = text.find(fs, 4)
    line_end = _line_end(text)
    if enc_end < 0 or enc_end > line_end:
        enc_end = line_end
    d = Delimiters.from_header(fs, text[4:enc_end])
    lines, terminator, trailing = _split_lines(text)
    msg = Message(lines, d, codec, terminator, bom=bom, trailing=trailing)
    msg.invalid_text = invalid
    _check_segment_ids(msg)
    _check_header(msg)
    return msg


def _line_end(text: str) -> int:
    ends = [i for i in (text.find("\r"), text.find("\n")) if i >= 0]
    return min(ends) if ends else len(text)


def _header_fields(raw: bytes, start: int, fs: str) -> list[str]:
    """The MSH line's fields, read as Latin-1 (the header is ASCII by rule); fields[n - 1] is MSH-n."""
    end = len(raw)
    for term in (b"\r", b"\n"):
        i = raw.find(term, start)
        if 0 <= i < end:
            end = i
    return raw[start:end].decode("latin-1").split(fs)


def _at(fields: list[str], index: int) -> str:
    return fields[index] if index < len(fields) else ""


def _declared_codec(fields: list[str], start: int) -> str | None:
    """MSH-18's codec, None when none is declared."""
    if len(fields) < 18:
        return None
    comp = fields[1][:1] if fields[1] else "^"
    rep = fields[1][1:2] if len(fields[1]) > 1 else "~"
    first = fields[17].split(rep, 1)[0].split(comp, 1)[0] if comp and rep else fields[17]
    try:
        return codec_for_charset(first)
    except HL7Error as exc:
        raise exc.located(byte_offset=start) from None


def _decode_replacing(raw: bytes, start: int, codec: str, fs: str) -> tuple[str, InvalidText | None]:
    """Decode in `codec`; invalid bytes become U+FFFD, noted with where the first one was."""
    body = raw[start:]
    try:
        return body.decode(codec), None
    except UnicodeDecodeError as exc:
        first = start + exc.start
    text = body.decode(codec, "replace")
    # A U+FFFD sent as such (valid UTF-8) is counted too: a rare over-count, never an under-count.
    return text, InvalidText(codec, text.count("\ufffd"), ErrorLocation(**_where(raw, first, fs)))


def _where(raw: bytes, offset: int, fs: str) -> dict[str, Any]:
    """The segment and field holding byte `offset` (the delimiters are ASCII in every codec read here)."""
    line_start = max(raw.rfind(b"\r", 0, offset), raw.rfind(b"\n", 0, offset)) + 1
    segment = raw[line_start : line_start + 3].decode("latin-1")
    field = raw.count(fs.encode("latin-1"), line_start, offset) + (1 if segment == "MSH" else 0)
    return {"byte_offset": offset, "segment": segment, "field": field}


def _split_lines(text: str) -> tuple[list[str], str, int]:
    has_cr = "\r" in text
    has_lf = "\n" in text
    if has_cr and has_lf:
        terminator = "\r\n" if "\r\n" in text else "\r"
        lines = _TERMINATORS.split(text)
    elif has_lf:
        terminator, lines = "\n", text.split("\n")
    else:
        terminator, lines = "\r", text.split("\r")
    # Count the terminators after the last segment so they are written back.
    trailing = 0
    while len(lines) > 1 and lines[-1] == "":
        lines.pop()
        trailing += 1
    # Blank lines between segments carry nothing; senders add them by accident.
    return [line for line in lines if line], terminator, trailing


_VALID_IDS: set[str] = set()
_VALID_IDS_MAX = 4096  # a bound: junk input must not grow the cache forever


def _valid_id(seg_id: str) -> bool:
    if seg_id in _VALID_IDS:
        return True
    ok = len(seg_id) == 3 and seg_id.isascii() and seg_id.isalnum() and seg_id.isupper()
    if ok and len(_VALID_IDS) < _VALID_IDS_MAX:
        _VALID_IDS.add(seg_id)
    return ok


# Segments that begin a message or a batch: inside a message, one of them means
# two messages were sent as one (two in one MLLP frame), and reading on would
# absorb the second into the first, silently.
_MESSAGE_BOUNDS = frozenset({"MSH", "FHS", "BHS", "BTS", "FTS"})


def _check_segment_ids(msg: Message) -> None:
    fs = msg.delimiters.field
    for i, seg in enumerate(msg.segments):
        line = seg.line
        if not (_valid_id(seg.id) and line[3:4] in ("", fs)):
            raise HL7Error(
                # The line's text is not quoted: it may hold patient data.
                f"segment {i + 1} does not start with a three-character segment id",
                ErrorLocation(byte_offset=msg.segment_offset(i)),
            )
        if i and seg.id in _MESSAGE_BOUNDS:
            raise HeaderError(
                f"segment {i + 1} is a {seg.id}: more than one message was sent as one "
                "(send each message in its own MLLP frame, or a batch as a file)",
                ErrorLocation(byte_offset=msg.segment_offset(i), segment=seg.id),
            )


def _check_header(msg: Message) -> None:
    msh = msg.segments[0]
    for field, what in ((9, "message type"), (10, "message control id")):
        if not msh.value(field):
            raise MissingFieldError(
                f"MSH-{field} ({what}) is missing",
                ErrorLocation(byte_offset=msg.segment_offset(0), segment="MSH", field=field),
            )
