"""The page id converter's pattern matches exactly the ids a PostgreSQL integer column holds."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from web.input_guard import decimal_at_most
from web.params import MAX_ID


@given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=0, max_value=10**7))
def test_pattern_matches_exactly_the_numbers_up_to_the_limit(limit: int, number: int) -> None:
    pattern = re.compile(decimal_at_most(limit) + r"\Z")
    assert bool(pattern.match(str(number))) == (number <= limit)


@given(st.integers(min_value=0, max_value=2**40))
def test_database_ids(number: int) -> None:
    pattern = re.compile(decimal_at_most(MAX_ID) + r"\Z")
    assert bool(pattern.match(str(number))) == (number <= MAX_ID)


def test_edges_and_other_scripts() -> None:
    pattern = re.compile(decimal_at_most(MAX_ID) + r"\Z")
    for text in ("0", "1", "2147483646", "2147483647"):
        assert pattern.match(text), text
    for text in ("2147483648", "2200000000", "99999999999", "", "٣", "²", "-1", "1.0"):
        assert not pattern.match(text), text
