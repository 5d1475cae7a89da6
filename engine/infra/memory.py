"""Giving freed memory back to the system after a large message.

CPython frees a parsed message's objects, but glibc's allocator keeps the
pages for later: four 15 MB messages left a node at 2 GB of resident memory
that nothing used again. `malloc_trim(0)` returns the free pages at the top of
every heap arena. It costs a few milliseconds for a large heap, so it runs
only after a large message, and off the event loop's thread (ctypes releases
the GIL during the call). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return trim


def release_free_memory() -> None:
    """Return the allocator's free pages to the system (glibc), or do nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
