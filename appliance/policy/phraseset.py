"""Many phrases in one fast pass: a trie-shaped regex of *anchor* words finds candidates, and each
candidate is confirmed by its phrase's full pattern searched in a small window around the anchor.

A plain alternation of whole phrases (or one led by a lookbehind) makes CPython's regex engine try every
alternative at every position. Anchors are the longest word of each phrase, so short common words such
as "as" or "do" do not wake the slow path.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator


def trie_regex(words: list[str]) -> str:
    """A regex matching exactly `words`, factored by common prefixes ("pass(?:word|wd)")."""
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}
    # top level without a group: CPython then derives the set of possible first characters and skips the rest
    return "|".join(re.escape(ch) + _trie_body(child) for ch, child in sorted(trie.items()))


def _trie_body(node: dict) -> str:
    branches = [re.escape(ch) + _trie_body(child) for ch, child in sorted(node.items()) if ch]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


def _bounded(text: str) -> bool:
    """Word boundaries apply to scripts written with spaces; CJK phrases match anywhere."""
    return all(ord(ch) < 0x2E80 for ch in text)


class PhraseSet:
    """Phrases and patterned phrases by category, matched on lower-cased text."""

    def __init__(self) -> None:
        self._by_anchor: dict[str, list[tuple[str, re.Pattern[str], int, int]]] = defaultdict(list)
        self._trigger: re.Pattern[str] | None = None
        self._lookup: dict[str, list[tuple[str, re.Pattern[str], int, int]]] = {}

    def add_phrase(self, category: str, phrase: str) -> None:
        words = phrase.lower().split()
        body = r"\s+".join(re.escape(w) for w in words)
        if _bounded(phrase):
            body = rf"(?<!\w){body}(?!\w)"
        self.add_pattern(category, max(words, key=len), body, before=4 * len(phrase))

    def add_pattern(self, category: str, anchor: str, pattern: str, *, group: int = 0, before: int = 0) -> None:
        """`pattern` contains `anchor` at most `before` characters after its start; `group` is the span kept."""
        self._by_anchor[anchor].append((category, re.compile(pattern), group, before))
        self._trigger = None

    def finditer(self, low: str) -> Iterator[tuple[str, int, int]]:
        """(category, start, end) of every confirmed phrase in the lower-cased text `low`."""
        if self._trigger is None:
            # the trie matches the longest anchor, so it also answers for the anchors that prefix it
            self._lookup = {a: [e for b, entries in self._by_anchor.items() if a.startswith(b) for e in entries]
                            for a in self._by_anchor}
            self._trigger = re.compile(trie_regex(sorted(self._by_anchor)))
        seen: set[tuple[str, int]] = set()
        for m in self._trigger.finditer(low):
            anchor, start = m.group(), m.start()
            if _bounded(anchor) and start and low[start - 1].isalnum():
                continue
            for category, pattern, group, before in self._lookup[anchor]:
                full = pattern.search(low, max(0, start - before), m.end() + 256)
                if full is not None and full.start() <= start and (category, full.start()) not in seen:
                    seen.add((category, full.start()))
                    yield category, full.start(group), full.end(group)
