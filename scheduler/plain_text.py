"""Plain text a person typed: which characters it may hold, and how to make stored text safe to
write into line-based formats.

Names, MRNs and reasons end up in pages, calendar files, SMS and emails. A line feed in a linac
name breaks a feed; a carriage return is written raw into an ICS file; a bidi override makes
"Smith" display as another name on screen while the stored value differs; a zero-width space makes
two MRNs look identical that are not. None of these is ever typed on purpose, so they are refused
where records are validated and, for rows stored before that check, replaced on output.
"""

from __future__ import annotations

import unicodedata

# Characters that reorder or hide text without showing themselves: the bidi embeddings and
# overrides (U+202A-U+202E), the bidi isolates (U+2066-U+2069), the implicit direction marks, the
# zero-width space/joiners, the word joiner and the byte order mark.
INVISIBLE_FORMATTING = frozenset(
    [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c"]
    + ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
)
# Line breaks that are not control characters but still end a line for many readers.
UNICODE_LINE_BREAKS = frozenset(["\u2028", "\u2029", "\u0085"])
# What a multi-line field (notes, preparation instructions) may keep of the C0 range.
MULTILINE_WHITESPACE = frozenset(["\n", "\t", "\r"])


def _is_control(char: str) -> bool:
    # Category Cc is exactly C0 (U+0000-U+001F), DEL and C1 (U+0080-U+009F).
    return unicodedata.category(char) == "Cc"


def plain_text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why ``value`` is not plain typed text, as a message for the person who typed it; None if it
    is. ``multiline`` allows line breaks and tabs (notes), never in a one-line field."""
    for char in value:
        if multiline and char in MULTILINE_WHITESPACE:
            continue
        if char in ("\n", "\r") or char in UNICODE_LINE_BREAKS:
            return "must be on one line (no line breaks)"
        if _is_control(char):
            return f"must not contain control characters (found U+{ord(char):04X})"
        if char in INVISIBLE_FORMATTING:
            return (
                "must not contain invisible direction or zero-width characters "
                f"(found U+{ord(char):04X})"
            )
    return None


def one_line(value: str) -> str:
    """``value`` with every line break, control and invisible formatting character replaced by a
    space: for writing text stored before it was checked into one-line outputs (ICS, headers)."""
    return "".join(
        " "
        if _is_control(char) or char in INVISIBLE_FORMATTING or char in UNICODE_LINE_BREAKS
        else char
        for char in value
    )
