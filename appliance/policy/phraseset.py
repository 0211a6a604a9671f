"""Many phrases in one fast pass: Hyperscan finds the *anchor* words of all phrases at once, and each
anchor is confirmed by its phrase's full pattern searched in a small window around it.

A plain alternation of whole phrases (or one led by a lookbehind) makes CPython's regex engine try every
alternative at every position, and even a trie of the anchors scans at only ~40 MB/s. Anchors are the
longest word of each phrase, so short common words such as "as" or "do" do not wake the slow path.
Anchors are taken as a trie regex would take them (leftmost, then longest, not overlapping).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator

from appliance.policy.triggers import SOM, Triggers

_Entry = tuple[str, re.Pattern[str], int, int, str]  # category, pattern, group kept, window before, lead


def _bounded(text: str) -> bool:
    """Word boundaries apply to scripts written with spaces; CJK phrases match anywhere."""
    return all(ord(ch) < 0x2E80 for ch in text)


class PhraseSet:
    """Phrases and patterned phrases by category, matched on lower-cased text."""

    def __init__(self) -> None:
        self._by_anchor: dict[str, list[_Entry]] = defaultdict(list)
        self._needs_boundary: list[bool] = []  # per anchor, in trigger order
        self._lookup: list[list[_Entry]] = []
        self._triggers: Triggers | None = None

    def add_phrase(self, category: str, phrase: str) -> None:
        words = phrase.lower().split()
        body = r"\s+".join(re.escape(w) for w in words)
        if _bounded(phrase):
            body = rf"(?<!\w){body}(?!\w)"
        self.add_pattern(category, max(words, key=len), body, before=4 * len(phrase), lead=words[0])

    def add_pattern(
        self, category: str, anchor: str, pattern: str, *, group: int = 0, before: int = 0, lead: str = ""
    ) -> None:
        """`pattern` contains `anchor` at most `before` characters after its start; `group` is the span kept.

        `lead` is a literal every match starts with: the window is only searched when it holds one.
        """
        self._by_anchor[anchor].append((category, re.compile(pattern), group, before, lead))
        self._triggers = None

    def compile(self) -> None:
        """Build the anchor triggers now rather than on the first `finditer`."""
        anchors = sorted(self._by_anchor)
        self._needs_boundary = [_bounded(a) for a in anchors]
        # the longest anchor at a position also answers for the anchors that prefix it
        self._lookup = [
            [e for b, entries in self._by_anchor.items() if a.startswith(b) for e in entries] for a in anchors
        ]
        self._triggers = Triggers([(re.escape(a), SOM) for a in anchors])

    def finditer(self, low: str) -> Iterator[tuple[str, int, int]]:
        """(category, start, end) of every confirmed phrase in the lower-cased text `low`."""
        if self._triggers is None:
            self.compile()
        assert self._triggers is not None
        seen: set[tuple[str, int]] = set()
        for index, start, end in _leftmost_longest(self._triggers.scan_flat(low)):
            if self._needs_boundary[index] and start and low[start - 1].isalnum():
                continue
            for category, pattern, group, before, lead in self._lookup[index]:
                first = max(0, start - before)
                if low.find(lead, first, start + len(lead)) < 0:  # no match can start in the window
                    continue
                full = pattern.search(low, first, end + 256)
                if full is not None and full.start() <= start and (category, full.start()) not in seen:
                    seen.add((category, full.start()))
                    yield category, full.start(group), full.end(group)


def _leftmost_longest(hits: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """(anchor index, start, end) as `re.finditer` of a regex alternating all anchors, longest first,
    would find them: at the leftmost start the longest anchor, then on from its end."""
    ordered = sorted((start, -end, index) for index, start, end in hits)
    out: list[tuple[int, int, int]] = []
    pos = 0
    for start, neg_end, index in ordered:
        if start >= pos:
            out.append((index, start, -neg_end))
            pos = -neg_end
    return out
