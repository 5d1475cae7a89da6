"""MLLP framing (HL7's Minimal Lower Layer Protocol), sans I/O.

A frame is `0x0B payload 0x1C 0x0D`. The decoder takes bytes as they arrive,
in any chunking, and hands back whole frames; it never holds more than
`max_frame_bytes` of one frame, so a peer that never sends an end block (or
sends a gigabyte) costs bounded memory: the oversized frame is reported and
skipped up to its end block, and the next frame is read normally.

Bytes outside frames are skipped: line ends between frames are common and
harmless; anything else is reported once per run, with its offset.
"""

from __future__ import annotations

from typing import final

import msgspec

from engine.core.errors import ErrorLocation, FramingError

__all__ = ["END_BLOCK", "START_BLOCK", "Frame", "MLLPDecoder", "MLLPStatistics", "frame"]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
_FS = 0x1C
_WHITESPACE = b" \t\r\n"


def frame(payload: bytes) -> bytes:
    """Wrap one message in an MLLP frame."""
    return START_BLOCK + payload + END_BLOCK


@final
class Frame(msgspec.Struct, frozen=True):
    """One complete frame's payload and the stream offset of its start block."""

    offset: int
    payload: bytes


@final
class MLLPStatistics(msgspec.Struct, frozen=True):
    """Counters since the decoder was made."""

    frames: int
    oversized_frames: int
    junk_bytes: int
    buffered_bytes: int


_OUTSIDE, _INSIDE, _DISCARDING = 0, 1, 2
_HEAD_BYTES = 1024  # of a frame refused as too large, kept to answer it by its MSH-10


@final
class MLLPDecoder:
    """Incremental MLLP decoder; `feed` bytes, get frames and framing errors."""

    def __init__(self, max_frame_bytes: int = 16 * 1024 * 1024) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self._max = max_frame_bytes
        self._state = _OUTSIDE
        self._buf = bytearray()
        self._start = 0  # stream offset of the current frame's start block
        self._offset = 0  # stream offset of the next byte fed
        self._junk_start: int | None = None
        self._junk_run = 0
        self._pending_end = False  # saw 0x1C as the last byte of a chunk
        self._frames = 0
        self._oversized = 0
        self._junk = 0

    def statistics(self) -> MLLPStatistics:
        """A snapshot of the counters."""
        return MLLPStatistics(self._frames, self._oversized, self._junk, len(self._buf))

    def open_frame(self) -> tuple[int, int] | None:
        """The frame begun and not yet ended: its start block's stream offset and the bytes since; else None."""
        if self._state == _OUTSIDE:
            return None
        return self._start, self._offset - self._start

    def feed(self, data: bytes) -> list[Frame | FramingError]:
        """Consume the next bytes of the stream; return what they completed."""
        out: list[Frame | FramingError] = []
        pos, n = 0, len(data)
        if self._pending_end and n:
            self._pending_end = False
            if data[0] == 0x0D:
                pos = 1
            self._offset += pos
        while pos < n:
            if self._state == _OUTSIDE:
                pos = self._skip_outside(data, pos, out)
            else:
                pos = self._read_inside(data, pos, out)
        return out

    def close(self) -> list[FramingError]:
        """End of stream: a frame still open was cut short."""
        out: list[FramingError] = []
        self._flush_junk(out)
        if self._state != _OUTSIDE:
            out.append(
                FramingError(
                    "stream ended inside an MLLP frame (no end block): the message was cut short",
                    ErrorLocation(byte_offset=self._start),
                )
            )
            self._state = _OUTSIDE
            self._buf.clear()
        return out

    def _skip_outside(self, data: bytes, pos: int, out: list[Frame | FramingError]) -> int:
        start = data.find(START_BLOCK, pos)
        end = len(data) if start < 0 else start
        junk = data[pos:end]
        if junk.strip(_WHITESPACE):
            if self._junk_start is None:
                self._junk_start = self._offset
            self._junk_run += len(junk)
            self._junk += len(junk)
        self._offset += end - pos
        if start < 0:
            return end
        self._flush_junk(out)
        self._state = _INSIDE
        self._start = self._offset
        self._offset += 1
        return start + 1

    def _flush_junk(self, out: list[Frame | FramingError] | list[FramingError]) -> None:
        if self._junk_start is not None:
            out.append(
                FramingError(
                    f"{self._junk_run} bytes outside any MLLP frame were skipped",
                    ErrorLocation(byte_offset=self._junk_start),
                )
            )
            self._junk_start, self._junk_run = None, 0

    def _read_inside(self, data: bytes, pos: int, out: list[Frame | FramingError]) -> int:
        end = data.find(b"\x1c", pos)
        restart = data.find(START_BLOCK, pos, end if end >= 0 else len(data))
        if restart >= 0:
            # A new start block before this frame's end: the frame was cut short.
            if self._state == _INSIDE:
                out.append(
                    FramingError(
                        "MLLP frame not terminated before the next start block: the message was cut short",
                        ErrorLocation(byte_offset=self._start),
                    )
                )
            self._offset += restart - pos
            self._state, self._buf = _OUTSIDE, bytearray()
            return restart
        chunk_end = len(data) if end < 0 else end
        self._take(data[pos:chunk_end], out)
        self._offset += chunk_end - pos
        if end < 0:
            return chunk_end
        # End block: 0x1C then 0x0D (a lone 0x1C is accepted, as many senders do).
        consumed = 1
        if end + 1 < len(data):
            consumed += data[end + 1] == 0x0D
        else:
            self._pending_end = True
        self._offset += consumed
        if self._state == _INSIDE:
            out.append(Frame(self._start, bytes(self._buf)))
            self._frames += 1
        self._state, self._buf = _OUTSIDE, bytearray()
        return end + consumed

    def _take(self, chunk: bytes, out: list[Frame | FramingError]) -> None:
        if self._state == _DISCARDING or not chunk:
            return
        if len(self._buf) + len(chunk) > self._max:
            head = bytes(self._buf[:_HEAD_BYTES]) + chunk[: max(0, _HEAD_BYTES - len(self._buf))]
            self._state = _DISCARDING
            self._oversized += 1
            self._buf = bytearray()
            # Reported at once, so a sender that never ends the frame is seen.
            out.append(
                FramingError(
                    f"MLLP frame larger than {self._max} bytes: refused and skipped",
                    ErrorLocation(byte_offset=self._start),
                    head=head[:_HEAD_BYTES],
                )
            )
            return
        self._buf += chunk
