"""Cutting an HL7 v2 stream into messages: plain concatenation and batch files.

A batch file wraps messages as `FHS BHS MSH... BTS FTS` (either level may be
absent; `FHS MSH... FTS` is one implicit batch). The trailers count what they
close (BTS-1 messages, FTS-1 batches);
a count that does not match means the file was cut short or spliced, and the
whole file is refused rather than half-processed.
"""

from __future__ import annotations

import re
from typing import final

import msgspec

from engine.core.errors import ErrorLocation, HL7Error

__all__ = ["HL7Stream", "split_stream"]

# A segment that bounds messages: at the start (after a BOM), or after a CR or LF. Two patterns, not one
# with a look-behind: a pattern that begins with a character set is scanned for in C, and the
# look-behind form tried every byte (0.32 s against 0.08 s for a file of 40,000 messages, 11 MB).
_FIRST = re.compile(rb"(?:\xef\xbb\xbf)?(MSH|FHS|BHS|BTS|FTS)(?=[^A-Za-z0-9\r\n])")
_AFTER_LINE = re.compile(rb"[\r\n](MSH|FHS|BHS|BTS|FTS)(?=[^A-Za-z0-9\r\n])")


@final
class HL7Stream(msgspec.Struct, frozen=True):
    """The messages of one HL7 v2 input, each with its byte offset in that input.

    `batch` is True when the input was a batch file (FHS/BHS envelope): the
    classifier sends such bulk traffic to the batch lane.
    """

    messages: list[tuple[int, bytes]]
    batch: bool = False


def split_stream(raw: bytes) -> HL7Stream:
    """Cut an HL7 v2 stream (one message, several, or a batch file) into messages.

    Bytes before the first MSH that are not a batch header stay with the first
    message, so parsing it reports them instead of dropping them.

    Raises:
        HL7Error: a batch trailer's count does not match what it closes.
    """
    bounds = boundaries(raw)
    if not bounds:
        return HL7Stream([(0, raw)] if raw.strip() else [])
    ends = [start for start, _ in bounds[1:]] + [len(raw)]
    messages: list[tuple[int, bytes]] = []
    batch = False
    in_batch = 0
    batches = 0
    for (start, seg_id), end in zip(bounds, ends, strict=True):
        if seg_id == b"MSH":
            # Junk or a BOM before the first message stays with it (the parser
            # keeps a BOM and reports junk), so nothing is dropped.
            first = start if messages or not raw[: bounds[0][0]].strip(b"\r\n \t") else 0
            messages.append((first, raw[first:end]))
            in_batch += 1
        elif seg_id == b"BHS":
            batch, in_batch = True, 0
            batches += 1
        elif seg_id == b"FHS":
            batch = True
        elif seg_id == b"BTS":
            _check_count(raw[start:end], in_batch, "BTS", "messages", start)
        elif batches:  # FTS
            _check_count(raw[start:end], batches, "FTS", "batches", start)
        else:
            # FHS, MSH..., FTS with no BHS (common in the wild, read by other HL7 libraries): one implicit
            # batch. Senders then count either that one batch or the messages in FTS-1: both are taken.
            _check_count(raw[start:end], 1, "FTS", "batches", start, also=in_batch)
    return HL7Stream(messages, batch)


def boundaries(raw: bytes) -> list[tuple[int, bytes]]:
    """Where each MSH, FHS, BHS, BTS and FTS segment begins, and which it is, in order."""
    opening = _FIRST.match(raw)
    found = [(opening.start(1), opening.group(1))] if opening else []
    found += [(m.start(1), m.group(1)) for m in _AFTER_LINE.finditer(raw)]
    return found


def _check_count(line: bytes, found: int, seg: str, what: str, offset: int, *, also: int | None = None) -> None:
    line = line.split(b"\r", 1)[0].split(b"\n", 1)[0]
    fields = line.split(line[3:4]) if len(line) > 3 else [line]
    declared = fields[1].strip() if len(fields) > 1 else b""
    if declared and declared.isdigit() and int(declared) not in (found, also):
        raise HL7Error(
            f"{seg}-1 declares {int(declared)} {what} but the file holds {found}: it was cut short or spliced",
            ErrorLocation(byte_offset=offset, segment=seg, field=1),
        )
