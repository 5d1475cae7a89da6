"""Text from a message made inert for display: control characters written out visibly.

A message can hold anything: ESC and OSC sequences (`ESC[2J` clears a
terminal, `ESC]8;;` makes a link), C1 controls, and the Unicode bidirectional
controls that reorder what a reader sees ("Trojan source"). Wherever such text
is shown to a person or echoed to a peer (an error's reason, an ACK's ERR, a
CLI table, quarantine metadata), it goes through `inert` first: tab and
newline stay, every other control becomes `\\xNN` or `\\uNNNN`.
"""

from __future__ import annotations

__all__ = ["inert"]

_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_VISIBLE = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)},
    **{c: f"\\u{c:04x}" for c in _BIDI},
}


def inert(text: str) -> str:
    """`text` with every control character written out visibly (`\\x1b`, `\\u202e`)."""
    return text.translate(_VISIBLE)
