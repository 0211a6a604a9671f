"""Look-alike letters: a letter of another script that Unicode's confusables data says reads as a Latin one.

`exаmple.it` with a Cyrillic "а", `АKIA...` with a Cyrillic "А", `paѕsword:` with a Macedonian "ѕ": NFKC leaves
them alone because they are different letters, not compatibility forms. Unicode's answer is the confusable
*skeleton* of UTS #39; ICU's spoof checker (`icu.SpoofChecker.getSkeleton`, ICU 77.1 with its own copy of
the Unicode 16 data in the pyicu-wheels wheel, so nothing is read or downloaded at run time) computes it. A letter is
folded to the ASCII letter or digit with the same skeleton (the one of its case when several share it, e.g.
Cyrillic "І" -> "I", palochka "ӏ" -> "l"), so one character stays one character and offsets do not move.

Only *mixed* tokens are folded: a run of non-space characters that holds both an ASCII letter or digit and a
look-alike, or a lone look-alike letter beside an ASCII token (the suffix of "AB 12 34 56 C"). That is how
a Latin value in disguise looks; text that is just Cyrillic or Greek (where "а", "о", "с" are ordinary
letters of words) is left as written, so its own phrases still match and nothing fires on it.
A token written wholly in look-alikes (no ASCII at all) is that script's text by this rule (UTS #39 calls it a
whole-script confusable) and is not folded.
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from functools import cache

import icu

from appliance.policy.triggers import SOM, UTF8, Triggers

# Blocks with no letter that looks like a single Latin letter or digit (CJK ideographs, Hangul syllables,
# CJK extensions, private use): skipped when the table is built, so building it takes a fraction of a second.
_SKIPPED = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xF8FF), (0x20000, 0x3FFFF))
_ASCII = string.ascii_letters + string.digits


def _pick(ch: str, candidates: list[str], skeleton: dict[str, str]) -> str:
    """The ASCII character `ch` stands for among those sharing its skeleton: same case first, then the
    skeleton's own prototype (Latin "l" for "I", "l" and "1"), then a letter before a digit."""
    if len(candidates) > 1:
        same = [c for c in candidates if (c.isupper(), c.islower()) == (ch.isupper(), ch.islower())]
        candidates = same or [c for c in candidates if skeleton[c] == c] or candidates
    return candidates[0]


@cache
def table() -> dict[int, str]:
    """Code point -> the ASCII letter or digit it imitates, for every non-ASCII letter or number whose
    UTS #39 skeleton is that of one ASCII letter or digit (and that the canonical view's first steps leave
    alone: NFKC folds fullwidth and mathematical letters, every script's decimal digits become ASCII)."""
    checker = icu.SpoofChecker()
    skeleton = {a: checker.getSkeleton(0, a) for a in _ASCII}
    by_skeleton: dict[str, list[str]] = {}
    for a in _ASCII:
        by_skeleton.setdefault(skeleton[a], []).append(a)
    out: dict[int, str] = {}
    code = 0x80
    while code <= sys.maxunicode:
        skip = next((end for start, end in _SKIPPED if start <= code <= end), None)
        if skip is not None:
            code = skip + 1
            continue
        ch = chr(code)
        if unicodedata.category(ch)[0] in "LN" and unicodedata.is_normalized("NFKC", ch) and not ch.isdecimal():
            candidates = by_skeleton.get(checker.getSkeleton(0, ch))
            if candidates:
                out[code] = _pick(ch, candidates, skeleton)
        code += 1
    return out


@cache
def _patterns() -> tuple[Triggers, re.Pattern[str]]:
    """Where an ASCII letter or digit and a look-alike meet in a token (next to each other or with up to
    three ASCII punctuation marks between them), found by one Hyperscan pass (a `re` search tries every
    letter of Cyrillic or Greek prose: about 7 MB/s); and one look-alike, for `re` within a found token."""
    codes = sorted(table())
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    look = "".join(rf"\x{{{a:x}}}-\x{{{b:x}}}" for a, b in ranges)
    gap = r"[!-/:-@\[-`{-~]{0,3}"  # up to three ASCII punctuation marks: "x@а", "AKIA-А"
    mixed = Triggers(
        [
            (rf"[A-Za-z0-9]{gap}[{look}]", UTF8 | SOM),
            (rf"[{look}]{gap}[A-Za-z0-9]", UTF8 | SOM),
            (rf"[A-Za-z0-9] [{look}]", UTF8 | SOM),  # a lone look-alike letter: the "C" of "AB 12 34 56 C"
            (rf"[{look}] [A-Za-z0-9]", UTF8 | SOM),
        ]
    )
    # `re` tests a class with characters beyond the BMP range by range (slow): the BMP look-alikes are
    # spelled out and every astral character is a candidate `fold` checks against the table
    one = "".join(re.escape(chr(c)) for c in codes if c <= 0xFFFF) + "\U00010000-\U0010ffff"
    return mixed, re.compile(f"[{one}]")


_SPACE = re.compile(r"\s")
_REACH = 256  # a token longer than this is folded in pieces of this size around each mixed place


def _alone(text: str, at: int) -> bool:
    """The letter at `at` is a word of its own (punctuation may follow it: "... 56 C,")."""
    return (at == 0 or not text[at - 1].isalnum()) and (at + 1 == len(text) or not text[at + 1].isalnum())


def fold(text: str) -> tuple[str, list[int]]:
    """`text` with the look-alikes of its mixed tokens folded to ASCII (same length), and their offsets."""
    mixed, one = _patterns()
    hits = mixed.scan_flat(text)
    if not hits:
        return text, []
    folds = table()
    out: list[str] = []
    offsets: list[int] = []
    pos = 0
    for index, start, end in sorted(hits, key=lambda hit: hit[1]):  # all patterns' hits, left to right
        if index >= 2:  # a one-letter token beside an ASCII one
            at = end - 1 if index == 2 else start
            if at >= pos and _alone(text, at) and (ascii_ := folds.get(ord(text[at]))) is not None:
                out.append(text[pos:at] + ascii_)
                offsets.append(at)
                pos = at + 1
            continue
        if start < pos:
            continue
        left = start
        floor = max(pos, left - _REACH)
        while left > floor and not text[left - 1].isspace():
            left -= 1
        space = _SPACE.search(text, end, end + _REACH)
        right = space.start() if space else min(len(text), end + _REACH)
        out.append(text[pos:left])
        token = list(text[left:right])
        for c in one.finditer(text, left, right):
            if (ascii_ := folds.get(ord(c.group()))) is not None:
                token[c.start() - left] = ascii_
                offsets.append(c.start())
        out.append("".join(token))
        pos = right
    out.append(text[pos:])
    return "".join(out), offsets
