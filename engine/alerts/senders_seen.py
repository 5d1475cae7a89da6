"""When each sender was last heard, as messages become durable: the quiet-feed rule's live half.

The search index keeps the same figure durably, but it waits while
messages are in flight, so under a flood it lags; a feed must not look
quiet because another feed is busy. The index's figures seed what this
process has not yet heard since it started.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import final

from engine.core.model import Envelope
from engine.search import sender_of

__all__ = ["SendersSeen"]


@final
class SendersSeen:
    """MSH-3^MSH-4 -> wall-clock microseconds of its last durable message, since this node started."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def saw(self, envelopes: Sequence[Envelope], at_us: int) -> None:
        """Durable messages, logged at about `at_us` (one time for the group: this runs per group, not per message)."""
        last = self._last
        for env in envelopes:
            if env.message_id.startswith("hl7:"):
                last[sender_of(env.message_id)] = at_us

    def merged(self, indexed: Iterable[tuple[str, int, int]]) -> dict[str, int]:
        """Each sender's last time: the later of the index's (sender, last_us, count) rows and this node's."""
        merged = {sender: last_us for sender, last_us, _count in indexed}
        for sender, at in self._last.items():
            if at > merged.get(sender, 0):
                merged[sender] = at
        return merged
