"""MLLP framing: any chunking, junk, oversized and unterminated frames, bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import FramingError
from engine.core.mllp import Frame, MLLPDecoder, frame


def _feed_all(decoder: MLLPDecoder, chunks: list[bytes]) -> list[Frame | FramingError]:
    out: list[Frame | FramingError] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    out.extend(decoder.close())
    return out


def test_frames_in_one_read_and_across_reads() -> None:
    """Several frames in one read, and one frame split across reads, come out whole."""
    stream = frame(b"MSH|one") + frame(b"MSH|two")
    d = MLLPDecoder()
    assert [f.payload for f in d.feed(stream) if isinstance(f, Frame)] == [b"MSH|one", b"MSH|two"]
    d2 = MLLPDecoder()
    assert d2.feed(stream[:5]) == []
    got = d2.feed(stream[5:])
    assert [f.payload for f in got if isinstance(f, Frame)] == [b"MSH|one", b"MSH|two"]


def test_frame_offsets_point_at_start_blocks() -> None:
    """Each frame knows where its start block was in the stream."""
    stream = b"\r\n" + frame(b"A") + frame(b"BB")
    frames = [f for f in MLLPDecoder().feed(stream) if isinstance(f, Frame)]
    assert [f.offset for f in frames] == [2, 2 + len(frame(b"A"))]


def test_line_ends_between_frames_are_harmless_junk_is_reported() -> None:
    """CR/LF between frames is skipped silently; other bytes are reported with their offset."""
    d = MLLPDecoder()
    out = d.feed(frame(b"A") + b"\r\n" + frame(b"B") + b"noise" + frame(b"C"))
    errors = [e for e in out if isinstance(e, FramingError)]
    assert [f.payload for f in out if isinstance(f, Frame)] == [b"A", b"B", b"C"]
    assert len(errors) == 1
    assert errors[0].location.byte_offset == len(frame(b"A") + b"\r\n" + frame(b"B"))
    assert d.statistics().junk_bytes == 5


def test_oversized_frame_is_refused_and_the_next_one_read() -> None:
    """A frame over the limit is reported once and skipped; memory stays bounded."""
    d = MLLPDecoder(max_frame_bytes=100)
    big = b"\x0b" + b"x" * 10_000
    out = []
    for i in range(0, len(big), 7):
        out.extend(d.feed(big[i : i + 7]))
        assert d.statistics().buffered_bytes <= 100
    out.extend(d.feed(b"\x1c\r" + frame(b"small")))
    assert [type(x) for x in out] == [FramingError, Frame]
    assert "larger than 100 bytes" in str(out[0])
    assert isinstance(out[1], Frame)
    assert out[1].payload == b"small"
    assert d.statistics().oversized_frames == 1


def test_unterminated_frames_are_reported() -> None:
    """A new start block inside a frame, or the end of the stream, means it was cut short."""
    d = MLLPDecoder()
    out = d.feed(b"\x0bMSH|cut" + frame(b"MSH|whole"))
    assert isinstance(out[0], FramingError)
    assert isinstance(out[1], Frame)
    assert out[1].payload == b"MSH|whole"
    d.feed(b"\x0bMSH|never ends")
    closing = d.close()
    assert len(closing) == 1
    assert "cut short" in closing[0].reason


def test_lone_file_separator_ends_a_frame() -> None:
    """Many senders end with 0x1C alone; the next frame still reads."""
    out = MLLPDecoder().feed(b"\x0bA\x1c\x0bB\x1c\r")
    assert [f.payload for f in out if isinstance(f, Frame)] == [b"A", b"B"]


def test_end_block_split_across_reads() -> None:
    """0x1C at the end of one read and 0x0D at the start of the next."""
    d = MLLPDecoder()
    assert [f.payload for f in d.feed(b"\x0bA\x1c") if isinstance(f, Frame)] == [b"A"]
    assert d.feed(b"\r") == []
    assert [f.payload for f in d.feed(frame(b"B")) if isinstance(f, Frame)] == [b"B"]


def test_limit_must_be_positive() -> None:
    """A decoder without room for a frame is a configuration mistake."""
    with pytest.raises(ValueError, match="positive"):
        MLLPDecoder(0)


_payloads = st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")), max_size=8)


@given(_payloads, st.data())
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    """Property: however the stream is cut into reads, the same frames come out."""
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    out = _feed_all(MLLPDecoder(), chunks)
    assert payloads == [f.payload for f in out if isinstance(f, Frame)]
    assert not [e for e in out if isinstance(e, FramingError)]


@given(st.lists(st.binary(max_size=50), max_size=10), st.integers(1, 64))
def test_arbitrary_bytes_never_break_the_decoder(chunks: list[bytes], limit: int) -> None:
    """Property: any bytes give only frames and framing errors, and never exceed the limit."""
    d = MLLPDecoder(limit)
    for chunk in chunks:
        for item in d.feed(chunk):
            assert isinstance(item, Frame | FramingError)
            if isinstance(item, Frame):
                assert len(item.payload) <= limit
        assert d.statistics().buffered_bytes <= limit
    for item in d.close():
        assert isinstance(item, FramingError)


@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=6), st.sampled_from(["\r", "\n", "\r\n"]))
def test_any_grouping_of_messages_into_frames_gives_one_answer_per_frame(sizes: list[int], end: str) -> None:
    """A frame of one message decodes to it; a frame of several is refused whole, naming the second MSH."""
    from engine.core.decode import Decoder
    from engine.core.errors import HeaderError
    from tests.harness.helpers import oru

    decoder, n = Decoder(), 0
    for size in sizes:
        messages = []
        for _ in range(size):
            n += 1
            msh = f"MSH|^~\\&|LAB|H|V|H|2026||ORU^R01|C{n}|P|2.5.1"
            messages.append(oru("OBX|1|NM|K||4.1|mmol/L|||N|||F", msh=msh).replace(b"\r", end.encode()))
        [payload] = [f.payload for f in MLLPDecoder().feed(frame(b"".join(messages))) if isinstance(f, Frame)]
        if size == 1:
            assert decoder.hl7(payload, received_at="t", source="s").message_id == f"hl7:LAB|H|C{n}"
            continue
        with pytest.raises(HeaderError, match="more than one message") as refused:
            decoder.hl7(payload, received_at="t", source="s")
        assert refused.value.location.segment == "MSH"
