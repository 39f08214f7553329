"""What every backend can store, and how much of a worker's report is kept (core/text.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerfacing_api.core.text import (
    MAX_RUNTIME_DETAILS,
    REPLACEMENT,
    storable,
    trim_details,
)

UNSTORABLE = {"\x00", *(chr(c) for c in range(0xD800, 0xE000))}

# Any code point, lone surrogates and NUL included, often next to each other.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
hostile = st.lists(
    st.sampled_from(["\x00", "\ud800", "\udfff", "a", "\U0001d518", "\n", "…", '"']), max_size=50
).map("".join)


@given(st.one_of(any_text, hostile))
def test_storable_replaces_each_unstorable_character_one_for_one(text: str) -> None:
    kept = storable(text)
    assert not UNSTORABLE & set(kept)
    assert len(kept) == len(text)
    for before, after in zip(text, kept, strict=True):
        assert after == (REPLACEMENT if before in UNSTORABLE else before)
    kept.encode()  # UTF-8 has a form for every character left
    assert storable(kept) == kept


def test_storable_hands_back_clean_text_itself() -> None:
    text = "Traceback (most recent call last):\n  ValueError: \U0001d518 «quoted»"
    assert storable(text) is text  # no copy on the usual path


def test_storable_keeps_the_text_around_a_nul() -> None:
    assert storable("loss=nan\x00\x00 at step 3") == "loss=nan\ufffd\ufffd at step 3"


@given(st.text(max_size=400), st.integers(min_value=64, max_value=300))
def test_trimmed_details_fit_and_keep_the_end(text: str, limit: int) -> None:
    trimmed = trim_details(text, limit)
    assert len(trimmed) <= limit
    assert trim_details(trimmed, limit) == trimmed
    if len(text) <= limit:
        assert trimmed == text
        return
    assert len(trimmed) == limit  # nothing is cut that would have fitted
    marker, _, end = trimmed.partition("]\n")
    assert marker == f"…[trimmed {len(text) - len(end)} characters"
    assert text.endswith(end)


def test_a_long_traceback_keeps_its_last_line() -> None:
    last = "RuntimeError: CUDA out of memory"
    details = "x" * 100_000 + "\n" + last
    trimmed = trim_details(details)
    assert len(trimmed) == MAX_RUNTIME_DETAILS
    marker, _, end = trimmed.partition("]\n")
    assert marker == f"…[trimmed {len(details) - len(end)} characters"
    assert end.endswith("\n" + last)


def test_details_within_the_limit_are_kept_whole() -> None:
    details = "y" * MAX_RUNTIME_DETAILS
    assert trim_details(details) is details


@pytest.mark.parametrize("limit", [0, 10, 63])
def test_a_limit_without_room_for_the_marker_is_a_mistake(limit: int) -> None:
    with pytest.raises(ValueError, match="no room"):
        trim_details("z" * 1000, limit)
