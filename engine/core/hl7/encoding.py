"""HL7 v2 delimiters, escape sequences and character sets.

A message declares its own delimiters in MSH-1 and MSH-2 (any characters, not
only `|^~\\&`; v2.7 adds a fifth, the truncation character) and its character
set in MSH-18. Everything here is a pure function of those declarations.
"""

from __future__ import annotations

import codecs
from typing import final

import msgspec

from engine.core.errors import CharsetError, ErrorLocation, EscapeError, HeaderError

__all__ = [
    "DEFAULT_DELIMITERS",
    "CharsetDefaults",
    "Delimiters",
    "codec_for_charset",
    "escape",
    "resolve_charset",
    "unescape",
]


@final
class Delimiters(msgspec.Struct, frozen=True):
    """The separators a message declared in MSH-1 and MSH-2.

    `truncation` is empty unless the message declared one (v2.7+).
    """

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @classmethod
    def from_header(cls, field: str, encoding_characters: str) -> Delimiters:
        """Validate MSH-1 and MSH-2 and build the delimiters.

        Raises:
            HeaderError: the characters are missing, repeated, letters or digits,
                or line ends — any of which would make the message ambiguous.
        """
        chars = field + encoding_characters
        if not 4 <= len(encoding_characters) <= 5:
            raise HeaderError(
                f"MSH-2 must hold 4 or 5 encoding characters, found {len(encoding_characters)}",
                ErrorLocation(segment="MSH", field=2),
            )
        for ch in chars:
            if ch.isalnum() or ch.isspace() or ord(ch) < 0x20 or ord(ch) > 0x7E:
                raise HeaderError(
                    f"encoding character {ch!r} is not allowed (letters, digits, spaces "
                    "and control characters cannot be delimiters)",
                    ErrorLocation(segment="MSH", field=2 if ch in encoding_characters else 1),
                )
        if len(set(chars)) != len(chars):
            raise HeaderError(
                f"encoding characters {chars!r} repeat a character",
                ErrorLocation(segment="MSH", field=2),
            )
        e = encoding_characters
        return cls(field, e[0], e[1], e[2], e[3], e[4:])

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it should be written back."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_DELIMITERS = Delimiters()

# HL7 table 0211 (alternate character sets) to Python codecs. UTF-16 and the
# ISO 2022 sets are absent on purpose: their bytes do not keep the ASCII
# delimiters, so the message could not be split before decoding.
_CHARSETS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "ISO IR101": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "ISO IR144": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "BIG-5": "big5",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc-kr",
}


def codec_for_charset(name: str) -> str | None:
    """The Python codec for an MSH-18 value; None when none was declared.

    Raises:
        CharsetError: the name is not one Vigil can read.
    """
    key = name.strip().upper()
    if not key:
        return None
    codec = _CHARSETS.get(key)
    if codec is None:
        raise CharsetError(
            f"MSH-18 character set {name!r} is not supported (supported: {', '.join(sorted(_CHARSETS))})",
            ErrorLocation(segment="MSH", field=18),
        )
    return codec


def resolve_charset(name: str) -> str:
    """The Python codec for a configured character set: an MSH-18 name (`8859/1`) or a codec's (`cp1252`).

    Raises:
        CharsetError: unknown, or a set whose bytes do not keep the ASCII delimiters (UTF-16).
    """
    try:
        codec = codec_for_charset(name)
    except CharsetError:
        try:
            codec = codecs.lookup(name).name
        except LookupError:
            codec = None
    if not codec or "|^~\\&\r\n".encode(codec, "replace") != b"|^~\\&\r\n":
        raise CharsetError(f"character set {name!r} is not one Vigil can read (for example UTF-8, 8859/1, cp1252)")
    return codec


@final
class CharsetDefaults(msgspec.Struct, frozen=True):
    """The character set of a message whose MSH-18 is empty: its sender's, else the node's.

    Most senders send UTF-8 without saying so; a legacy 8-bit sender is named
    here (`senders` maps `MSH-3|MSH-4`, as written, to a Python codec).
    """

    default: str = "utf-8"
    senders: dict[str, str] = msgspec.field(default_factory=dict)

    def codec_for(self, application: str, facility: str) -> str:
        """The codec for a sender's undeclared messages."""
        if not self.senders:
            return self.default
        return self.senders.get(f"{application}|{facility}", self.default)


# Formatting escapes (.br, .sp, ...) become plain text: a line break is a
# line break; indentation and centring hints are dropped.
_FORMAT_REPEAT_MAX = 100
_FORMATTING = {"br": "\n", "fi": "", "nf": "", "ce": "", "in": "", "ti": "", "H": "", "N": ""}


def unescape(text: str, d: Delimiters, codec: str = "utf-8") -> str:
    """Replace HL7 escape sequences in one leaf value with the text they stand for.

    `\\X..\\` hex bytes are read in the message's own character set. Character
    set switches (`\\C..\\`, `\\M..\\`) and local escapes (`\\Z..\\`) are kept
    literally: they carry meaning Vigil does not interpret, and nothing is lost.

    Raises:
        EscapeError: an escape sequence is unterminated, empty or unknown.
    """
    esc = d.escape
    if esc not in text:
        return text
    out: list[str] = []
    pos = 0
    while True:
        start = text.find(esc, pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        end = text.find(esc, start + 1)
        if end < 0:
            raise EscapeError(f"unterminated escape sequence at character {start}")
        out.append(text[pos:start])
        out.append(_expand(text[start + 1 : end], d, codec))
        pos = end + 1


def _expand(code: str, d: Delimiters, codec: str) -> str:
    simple = {
        "F": d.field,
        "S": d.component,
        "T": d.subcomponent,
        "R": d.repetition,
        "E": d.escape,
    }
    if code in simple:
        return simple[code]
    if code == "P" and d.truncation:
        return d.truncation
    if code in _FORMATTING:
        return _FORMATTING[code]
    if not code:
        raise EscapeError("empty escape sequence")
    head, rest = code[0], code[1:]
    if head == "X":
        try:
            return bytes.fromhex(rest).decode(codec)
        except (ValueError, UnicodeDecodeError):
            raise EscapeError(f"bad hexadecimal escape \\X{rest}\\") from None
    if head in "CMZ":
        return f"{d.escape}{code}{d.escape}"
    if code.startswith((".sp", ".sk")):
        count = code[3:].strip().lstrip("+") or "1"
        # Bounded: `\.sp999999999\` must not become a gigabyte of newlines.
        if not count.isdigit() or int(count) > _FORMAT_REPEAT_MAX:
            raise EscapeError(f"bad formatting escape \\{code}\\")
        return ("\n" if code.startswith(".sp") else " ") * int(count)
    if code.startswith((".in", ".ti")):
        return ""
    if code.startswith(".") and code[1:] in _FORMATTING:
        return _FORMATTING[code[1:]]
    raise EscapeError(f"unknown escape sequence \\{code}\\")


def _escape_table(d: Delimiters) -> dict[int, str]:
    esc = d.escape
    table = {
        ord(d.escape): f"{esc}E{esc}",
        ord(d.field): f"{esc}F{esc}",
        ord(d.component): f"{esc}S{esc}",
        ord(d.subcomponent): f"{esc}T{esc}",
        ord(d.repetition): f"{esc}R{esc}",
        ord("\n"): f"{esc}.br{esc}",
        ord("\r"): f"{esc}X0D{esc}",
    }
    if d.truncation:
        table[ord(d.truncation)] = f"{esc}P{esc}"
    return table


_TABLES: dict[Delimiters, dict[int, str]] = {}


def escape(text: str, d: Delimiters) -> str:
    """Escape a leaf value so it can be written into a message with these delimiters."""
    table = _TABLES.get(d)
    if table is None:
        table = _TABLES.setdefault(d, _escape_table(d))
    return text.translate(table)


def decode_text(raw: bytes, codec: str, base_offset: int = 0) -> str:
    """Decode message bytes, turning a bad byte into a CharsetError naming its offset."""
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise CharsetError(
            f"byte 0x{raw[exc.start]:02x} at offset {base_offset + exc.start} is not valid {codec}",
            ErrorLocation(byte_offset=base_offset + exc.start),
        ) from None
