"""The shared check for typed text and the output clean-up, without a database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.plain_text import one_line, plain_text_problem

REFUSED = [
    "\n",
    "\r",
    "\t",
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9f",
    "\u2028",
    "\u2029",
    *(chr(c) for c in range(0x202A, 0x202F)),
    *(chr(c) for c in range(0x2066, 0x206A)),
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u200e",
    "\u200f",
]


@pytest.mark.parametrize("char", REFUSED, ids=[f"U+{ord(c):04X}" for c in REFUSED])
def test_one_line_text_refuses_control_and_invisible_characters(char: str) -> None:
    assert plain_text_problem(f"Ana{char}Lopez") is not None
    assert one_line(f"Ana{char}Lopez") == "Ana Lopez"


@pytest.mark.parametrize(
    "text", ["José Núñez", "O'Brien-Smith", "محمد", "李小龙", "Zoë Ångström", "MRN-0001/7"]
)
def test_names_in_any_script_are_accepted(text: str) -> None:
    assert plain_text_problem(text) is None
    assert one_line(text) == text


def test_multi_line_text_keeps_line_breaks_and_tabs_only() -> None:
    assert plain_text_problem("Fiducials placed.\r\n\tCheck breath hold.", multiline=True) is None
    assert plain_text_problem("Notes\u202e", multiline=True) is not None
    assert plain_text_problem("Notes\x00", multiline=True) is not None
    assert "one line" in (plain_text_problem("a\nb") or "")


@given(st.text())
def test_cleaned_text_is_always_accepted_on_one_line(text: str) -> None:
    assert plain_text_problem(one_line(text)) is None
    assert len(one_line(text)) == len(text)
