"""One Hyperscan pass that finds every place a detector has to look, so Python only runs where it matters.

CPython's `re` scans a text once per pattern and, unless a pattern starts with a literal, tries it at
every position (about 15-40 MB/s per pattern here). Hyperscan runs all trigger patterns in one pass at
GB/s and calls back only at hits, which are rare in ordinary text. Each trigger is a *necessary* part of
its detector's exact `re` pattern (a leading literal, the digit run a number lives in), so findings are
exactly those of running the `re` patterns over the whole text: the detectors re-run the exact pattern
at each hit.

Hyperscan works on bytes; the text goes in as UTF-8 (lone surrogates as "?", one byte for one
character, like every other character outside the triggers) and byte offsets are mapped back to
character offsets, which is free for ASCII text.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache

import hyperscan

SOM = hyperscan.HS_FLAG_SOM_LEFTMOST
UTF8 = hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_UCP
CASELESS = hyperscan.HS_FLAG_CASELESS

Hits = list[list[tuple[int, int]]]


@cache
def decimal_class() -> str:
    """Hyperscan class body of the characters `re` takes for `\\d` in str patterns (Unicode decimals).

    Spelled out from Python's own tables so both engines agree whatever their Unicode versions.
    """
    ranges: list[list[int]] = []
    for code in range(0x80, 0x110000):
        if chr(code).isdecimal():
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "0-9" + "".join(rf"\x{{{a:x}}}-\x{{{b:x}}}" for a, b in ranges)


class Triggers:
    """Patterns compiled into one Hyperscan database; `scan` gives each pattern's (start, end) hits."""

    def __init__(self, patterns: Sequence[tuple[str, int]]) -> None:
        """`patterns`: (Hyperscan expression, flags); hits start at 0 unless the flags hold `SOM`."""
        self._count = len(patterns)
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(
            expressions=[p.encode() for p, _ in patterns], ids=list(range(self._count)), flags=[f for _, f in patterns]
        )
        self._local = threading.local()  # Hyperscan scratch space is per thread

    def scan(self, text: str) -> Hits:
        hits: Hits = [[] for _ in range(self._count)]
        for i, start, end in self.scan_flat(text):
            hits[i].append((start, end))
        return hits

    def scan_flat(self, text: str) -> list[tuple[int, int, int]]:
        """(pattern index, start, end) of every hit: cheaper than `scan` for many patterns and few hits."""
        if not text:
            return []
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self._db)
        data = text.encode("utf-8", "replace")
        found: list[tuple[int, int, int]] = []
        self._db.scan(
            data, match_event_handler=lambda i, start, end, _f, _c: found.append((i, start, end)), scratch=scratch
        )
        if len(data) == len(text) or not found:
            return found
        chars = _char_offsets(data, {o for _, start, end in found for o in (start, end)})
        return [(i, chars[start], chars[end]) for i, start, end in found]


# UTF-8 continuation bytes (10xxxxxx) as 1, every other byte as 0: a character starts at each 0
_CONTINUATION = bytes(1 if 0x80 <= b < 0xC0 else 0 for b in range(256))


def _char_offsets(data: bytes, offsets: set[int]) -> dict[int, int]:
    """Character offset of each byte offset (all on character boundaries: the triggers match whole
    characters): the byte offset less the continuation bytes before it, counted in C on one translated
    copy rather than by decoding a slice per offset."""
    marks = data.translate(_CONTINUATION)
    out: dict[int, int] = {}
    byte = char = 0
    for offset in sorted(offsets):
        char += offset - byte - marks.count(1, byte, offset)
        byte = offset
        out[offset] = char
    return out
