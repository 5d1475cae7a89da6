"""HL7 v2 escape sequences: every standard escape, and escape/unescape as inverses."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import EscapeError
from engine.core.hl7 import DEFAULT_DELIMITERS, Delimiters, escape, unescape

D = DEFAULT_DELIMITERS


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b", "a^b"),
        ("a\\T\\b", "a&b"),
        ("a\\R\\b", "a~b"),
        ("a\\E\\b", "a\\b"),
        ("line1\\.br\\line2", "line1\nline2"),
        ("\\X4869\\", "Hi"),
        ("\\XC3A9\\", "é"),
        ("\\H\\bold\\N\\", "bold"),
        ("a\\.sp2\\b", "a\n\nb"),
        ("a\\.sk3\\b", "a   b"),
        ("\\.in+4\\x", "x"),
        ("\\Zlocal\\", "\\Zlocal\\"),
        ("\\C2842\\", "\\C2842\\"),
        ("plain", "plain"),
    ],
)
def test_standard_escapes(escaped: str, text: str) -> None:
    """Each standard escape sequence stands for its character or formatting."""
    assert text == unescape(escaped, D)


def test_hex_escapes_read_in_the_message_charset() -> None:
    """`\\X..\\` bytes are decoded in the message's character set."""
    assert unescape("\\XE9\\", D, "latin-1") == "é"


@pytest.mark.parametrize("bad", ["a\\Fb", "\\\\", "\\Q\\", "\\XZZ\\", "\\XC3\\", "\\.sp999999\\", "\\.spx\\"])
def test_malformed_escapes_are_typed_errors(bad: str) -> None:
    """Unterminated, empty, unknown, bad hex or unbounded escapes raise EscapeError."""
    with pytest.raises(EscapeError):
        unescape(bad, D)


_delimiter_sets = st.sampled_from(
    [D, Delimiters("#", "$", "*", "@", "!", ""), Delimiters("|", "^", "~", "\\", "&", "#")]
)


@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"])), _delimiter_sets)
def test_unescape_inverts_escape(text: str, d: Delimiters) -> None:
    """Property: any text survives escape then unescape, for any delimiters."""
    escaped = escape(text, d)
    for ch in (d.field, d.component, d.repetition, d.subcomponent, "\r", "\n"):
        assert ch not in escaped
    assert text == unescape(escaped, d)


@given(st.text(alphabet=st.sampled_from("ab\\FSTREX0123.brspH")))
def test_unescape_is_total(text: str) -> None:
    """Property: unescape returns text or raises EscapeError, never anything else."""
    with contextlib.suppress(EscapeError):
        unescape(text, D)
