"""A record's oldest facts kept as its snapshot's bytes, decoded only when something reads them.

A patient with a long history (a chart of 30,000 results, or one that
absorbed such a chart at a merge) is reactivated again and again for one new
message at a time. Decoding every fact of its snapshot at each reactivation
grew a message's cost with the history: over a million messages, such
decodes were the largest part of why the last tenth cost more than the first.
The new message needs none of them; a read of the record, a merge, or a
correction without a time of its own does, and decodes them then.

Pure: bytes in, facts out. The decode goes through msgspec a slice of facts
at a time, because msgspec holds the interpreter for a whole call: between
two slices another thread (the event loop) can run.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import ClassVar, Final, final

import msgspec

from actors.fact import Fact

__all__ = ["HeldFacts"]

_ENCODER: Final = msgspec.msgpack.Encoder()
_FACTS: Final = msgspec.msgpack.Decoder(tuple[Fact, ...])
_RAWS: Final = msgspec.msgpack.Decoder(list[msgspec.Raw])


@final
class HeldFacts(msgspec.Struct, frozen=True, gc=False):
    """`count` facts as MessagePack, one after another: the items of a snapshot's `facts` array, its header cut."""

    count: int
    items: bytes

    SLICE_FACTS: ClassVar[int] = 512  # about 0.6 ms of msgspec's time, encoded or decoded
    # Bytes below which held facts are decoded in one call (at most about 1.5 ms): finding where each fact
    # begins costs about a quarter more (27 -> 35 ms for 30,000 facts), worth it only where one call would be long.
    WHOLE_BYTES_MAX: ClassVar[int] = 256 * 1024

    @classmethod
    def of_array(cls, array: bytes) -> HeldFacts:
        """Held facts from a whole MessagePack array (header and items).

        Raises:
            msgspec.DecodeError: the bytes do not begin with an array header.
        """
        count, header = _array_count(array)
        return cls(count, array[header:])

    @classmethod
    def of_facts(cls, held: HeldFacts | None, facts: Sequence[Fact]) -> HeldFacts:
        """`held` (written as it is, never decoded) followed by `facts`, encoded a slice per call to msgspec."""
        step = cls.SLICE_FACTS
        slices = (facts[i : i + step] for i in range(0, len(facts), step))
        items = [held.items] if held is not None else []
        items += [_ENCODER.encode(part)[len(_array_header(len(part))) :] for part in slices]  # each one's header cut
        return cls((held.count if held is not None else 0) + len(facts), b"".join(items))

    def array(self) -> bytes:
        """The facts as one MessagePack array (what msgspec writes for a tuple of them)."""
        return _array_header(self.count) + self.items

    def decode(self) -> tuple[Fact, ...]:
        """Every held fact, in order.

        Raises:
            msgspec.DecodeError: the bytes are not `count` facts.
        """
        array = self.array()
        if len(array) < self.WHOLE_BYTES_MAX:
            return _FACTS.decode(array)
        raws = _RAWS.decode(array)  # where each fact begins: one call, about 4 ms for 30,000 facts
        facts: list[Fact] = []
        step = self.SLICE_FACTS
        for start in range(0, len(raws), step):  # a loop of its own: where the interpreter may be handed over
            facts.extend(_FACTS.decode(_ENCODER.encode(raws[start : start + step])))  # those facts' array
        return tuple(facts)


def _array_header(count: int) -> bytes:
    """The MessagePack array header for `count` items, in the shortest form (as msgspec writes it)."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + struct.pack(">H", count)
    return b"\xdd" + struct.pack(">I", count)


def _array_count(data: bytes) -> tuple[int, int]:
    """An array's item count and the length of its header."""
    first = data[0] if data else 0
    if 0x90 <= first <= 0x9F:
        return first & 0x0F, 1
    if first == 0xDC and len(data) >= 3:
        return struct.unpack_from(">H", data, 1)[0], 3
    if first == 0xDD and len(data) >= 5:
        return struct.unpack_from(">I", data, 1)[0], 5
    raise msgspec.DecodeError("a record's facts are not a MessagePack array")
