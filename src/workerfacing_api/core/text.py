"""Free text the service keeps but does not validate: what a database can hold, and how much of
a worker's ``runtime_details`` is kept.

Names (groups, GPU models) and paths are bounded in the wire schema (``core.model``) and refused
when out of bounds. A worker's ``runtime_details`` is never refused, because it often carries the
report of a failure that would otherwise be lost: it is trimmed (``trim_details``) where it enters
the core, and the storage ports pass every text through ``storable`` on its way in, so that each
backend keeps the same characters (ARCHITECTURE §3, "a worker's report always lands").
"""

from __future__ import annotations

import re

# NUL ends a C string: PostgreSQL refuses it in TEXT and JSONB. A lone surrogate (U+D800 to
# U+DFFF, which never stands for a character on its own) has no UTF-8 form, so neither driver can
# send it. Every other code point is storable on every backend.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"  # what Unicode itself puts where a character was lost


def storable(text: str) -> str:
    """``text`` with each character no database can store (NUL, a lone surrogate) replaced by
    U+FFFD, one for one, so the length stays the same. Called on every text parameter of every
    statement: the usual text has none of them and costs one scan, without a copy."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


# A worker's runtime_details beyond this many characters keep their end. The DECODE worker sends
# the last 1 000 characters of its logs; this leaves room for far more (a long traceback) while
# an outbox row, a log line and an upstream request stay small.
MAX_RUNTIME_DETAILS = 16_384
_TRIMMED = "…[trimmed {} characters]\n"
_MIN_LIMIT = 64  # the marker with any count a text in memory can have, and some text after it


def trim_details(text: str, limit: int = MAX_RUNTIME_DETAILS) -> str:
    """``text`` if it has at most ``limit`` characters; else its end, after a marker saying how
    many characters were cut from the front, ``limit`` characters in all. The end is what is
    kept because that is where a traceback names the error."""
    if limit < _MIN_LIMIT:
        raise ValueError(f"a limit of {limit} leaves no room for the marker; use {_MIN_LIMIT}+")
    if len(text) <= limit:
        return text
    # The marker's length depends on the number it states; settle on the number that makes
    # marker and kept end fill ``limit`` exactly. It only grows, by a digit at most, so this
    # ends after a step or two.
    cut = len(text) - limit
    while True:
        marker = _TRIMMED.format(cut)
        needed = len(text) - (limit - len(marker))
        if needed == cut:
            return marker + text[cut:]
        cut = needed
