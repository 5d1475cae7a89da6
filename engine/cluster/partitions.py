"""Partitions: which partition a patient is in, and which node should own each one (pure).

A patient key hashes to one of a fixed number of partitions (SHA-256, so the
spread is even and the same on every node and every Python). A message about
no patient (a master file, a batch trailer) hashes its message id instead, so
a redelivery lands in the same partition and is recognised as a duplicate.

`plan` spreads the partitions evenly over the live members. It is a function
of what every node can see (the members and the current owners), so every
node computes the same plan; leases (compare-and-set) make a brief
disagreement harmless. It moves as few partitions as it can: an owner keeps
what it has up to its fair share, and only the surplus and the orphans move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

__all__ = ["fair_shares", "partition_of", "plan"]


def partition_of(key: str, partitions: int) -> int:
    """The partition of a patient key (or of a message id, for a message about no patient)."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def fair_shares(partitions: int, members: Iterable[str]) -> dict[str, int]:
    """How many partitions each member should own: equal shares, the first members (by name) one more."""
    ordered = sorted(set(members))
    if not ordered:
        return {}
    base, extra = divmod(partitions, len(ordered))
    return {member: base + (1 if i < extra else 0) for i, member in enumerate(ordered)}


def plan(partitions: int, members: Iterable[str], owners: Mapping[int, str | None]) -> dict[int, str]:
    """The owner each partition should have, given the live members and who owns what now.

    Args:
        partitions: how many partitions there are.
        members: the live nodes (a node counts itself).
        owners: the current owner of each partition (absent or None: none, or
            one whose lease expired).

    Returns:
        Every partition's planned owner (empty when there is no member).
    """
    shares = fair_shares(partitions, members)
    if not shares:
        return {}
    planned: dict[int, str] = {}
    counts = dict.fromkeys(shares, 0)
    # Keep: an owner that is still a member keeps its partitions, up to its share.
    for p in range(partitions):
        owner = owners.get(p)
        if owner in shares and counts[owner] < shares[owner]:
            planned[p] = owner
            counts[owner] += 1
    # Move: the rest to the members below their share, in name order.
    hungry = iter(sorted(m for m in shares for _ in range(shares[m] - counts[m])))
    for p in range(partitions):
        if p not in planned:
            planned[p] = next(hungry)
    return planned
