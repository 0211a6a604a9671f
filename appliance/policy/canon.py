"""The one view of text every detector scans: what a reader (or the model) takes the text to say.

An attacker slips past exact patterns with characters nobody sees or that look like others: a zero-width
space inside a card number, an en-dash or ideographic space as separator, fullwidth "＠" and digits, a
JSON `\\u002d` escape in tool-call arguments. The canonical view decodes `\\uXXXX` escapes, applies
Unicode NFKC, drops default-ignorable and invisible formatting code points, and maps look-alike
separators (every dash, every space) and every decimal digit to ASCII, then folds the look-alike letters
of mixed-script tokens to the Latin letters they imitate (confusables.py: UTS #39 skeletons). Each
canonical character remembers the original characters it came from, so a finding maps back to exactly
the original span (redaction then replaces the hidden characters too). Plain ASCII text without escapes
is its own view and costs nothing; other text is searched for the few characters that change with one
regex, never walked character by character in Python.

The dropped characters are also reported: hidden text is what a human reviewer of the prompt cannot
see but the model reads (tag characters and variation-selector runs can carry whole ASCII messages).
So are folded look-alikes inside a detected value: a reviewer reads `exаmple.it` as the Latin address.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
import sys
import unicodedata
from dataclasses import dataclass
from functools import cache

from appliance.policy import confusables

# Look-alikes NFKC leaves alone: dashes, dots and slashes used as separators inside numbers (every dash
# punctuation (Pd) and every space separator (Zs) are added from Python's tables in `_tables`).
_SEPARATORS = {
    **dict.fromkeys("\u2043\u2212\u2796\ufe58\u02d7", "-"),
    **dict.fromkeys("\u00b7\u2022\u2027\u2219\u22c5\u30fb\u3002\u0387\u2e31", "."),
    **dict.fromkeys("\u2044\u2215\u29f8", "/"),
}

# Removed characters that hide text whatever their count (see `_hidden_runs` for the others).
_ALWAYS_HIDDEN = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\u180e")
_VARIATION = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_TAG = re.compile("[\U000e0000-\U000e007f]")
_FLAG_TAGS = re.compile("\U0001f3f4[\U000e0061-\U000e007a]{2,6}\U000e007f")  # subdivision flags (England...)


def _ignorable(ch: str) -> bool:
    """Unicode Default_Ignorable_Code_Point, plus every other format (Cf) character."""
    code = ord(ch)
    return (
        unicodedata.category(ch) == "Cf"
        or code in (0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0)
        or 0x180B <= code <= 0x180F
        or 0x200B <= code <= 0x200F
        or 0x202A <= code <= 0x202E
        or 0x2060 <= code <= 0x206F
        or 0xFE00 <= code <= 0xFE0F
        or 0xFFF0 <= code <= 0xFFF8
        or 0x1BCA0 <= code <= 0x1BCA3
        or 0x1D173 <= code <= 0x1D17A
        or 0xE0000 <= code <= 0xE0FFF
    )


@cache
def _tables() -> tuple[re.Pattern[str], dict[str, str]]:
    """The pattern of every character the view changes, and what each becomes ("" when dropped).

    Built once from Python's own Unicode tables (about a second), so both stay in step with `re`. The
    pattern spells out the changed characters of the BMP only and takes every astral character (and
    every backslash, for escapes) as a candidate `canonical` checks: `re` tests a class with astral
    ranges range by range, hundreds of times slower than the BMP bitmap.
    """
    change: dict[str, str] = {}
    for code in range(0x80, sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        category = unicodedata.category(ch)
        if _ignorable(ch):
            change[ch] = ""
        elif ch in _SEPARATORS:
            change[ch] = _SEPARATORS[ch]
        elif category == "Pd":
            change[ch] = "-"
        elif category == "Zs":
            change[ch] = " "
        elif ch.isdecimal():
            change[ch] = str(unicodedata.decimal(ch))
        elif unicodedata.combining(ch):
            change[ch] = unicodedata.normalize("NFKC", ch)  # may compose with the character before it
        else:
            nfkc = unicodedata.normalize("NFKC", ch)
            if nfkc != ch:
                change[ch] = "".join(
                    _SEPARATORS.get(c, str(unicodedata.decimal(c)) if c.isdecimal() and not c.isascii() else c)
                    for c in nfkc
                )
    body = "".join(re.escape(c) for c in sorted(change) if ord(c) <= 0xFFFF)
    return re.compile(f"[{body}\\\\\U00010000-\U0010ffff]"), change


def warm() -> None:
    """Build the tables now (at pack load) rather than on the first non-ASCII request."""
    _tables()
    confusables.fold("a\u0430")


@dataclass(frozen=True, slots=True)
class View:
    """The canonical `text` and, when it differs from the original, the map back.

    `_canon[i]`, `_orig[i]`, `_orig_end[i]`: segment i starts at canonical offset `_canon[i]` and original
    offset `_orig[i]`; it is copied one for one when `_orig_end[i]` is -1, otherwise all its characters
    came from original `[_orig[i], _orig_end[i])`. `hidden` holds original offsets of dropped characters,
    `lookalike` those of folded look-alike letters (one for one: they move no offset).
    """

    text: str
    _canon: tuple[int, ...] = ()
    _orig: tuple[int, ...] = ()
    _orig_end: tuple[int, ...] = ()
    hidden: tuple[int, ...] = ()
    hidden_spans: tuple[tuple[int, int], ...] = ()  # runs of hidden text worth reporting on their own
    lookalike: tuple[int, ...] = ()

    @property
    def identity(self) -> bool:
        """The text is the original: nothing to map back or report."""
        return not self._canon and not self.lookalike

    def start(self, pos: int) -> int:
        """Original offset of canonical offset `pos` as a span start."""
        if not self._canon:
            return pos
        i = bisect.bisect_right(self._canon, pos) - 1
        if i < 0:
            return pos
        return self._orig[i] + (pos - self._canon[i]) if self._orig_end[i] < 0 else self._orig[i]

    def end(self, pos: int) -> int:
        """Original offset of canonical offset `pos` as a span end (after the last character's origin)."""
        if not self._canon or pos == 0:
            return pos
        i = bisect.bisect_right(self._canon, pos - 1) - 1
        return self._orig[i] + (pos - self._canon[i]) if self._orig_end[i] < 0 else self._orig_end[i]

    def hides(self, start: int, end: int) -> bool:
        """Whether original `[start, end)` holds a dropped character or a folded look-alike."""
        return any(
            (i := bisect.bisect_left(offsets, start)) < len(offsets) and offsets[i] < end
            for offsets in (self.hidden, self.lookalike)
        )


def canonical(text: str) -> View:
    if text.isascii() and "\\u" not in text:
        return View(text)
    view = _normalised(text)
    folded, offsets = confusables.fold(view.text)
    if not offsets:
        return view
    return dataclasses.replace(view, text=folded, lookalike=tuple(view.start(o) for o in offsets))


_ESCAPE = re.compile(r"\\u[0-9A-Fa-f]{4}")


def _normalised(text: str) -> View:
    """The view before look-alikes are folded: escapes decoded, NFKC, invisible characters dropped."""
    pattern, change = _tables()
    out: list[str] = []
    canon: list[int] = []
    orig: list[int] = []
    orig_end: list[int] = []
    hidden: list[tuple[int, int]] = []
    size = pos = 0  # canonical length so far, original offset copied up to

    def segment(first: int, last: int, value: str, copied: bool) -> None:
        nonlocal size
        if value:
            canon.append(size)
            orig.append(first)
            orig_end.append(-1 if copied else last)
            out.append(value)
            size += len(value)

    m = pattern.search(text)
    while m is not None:
        start = m.start()
        char = m.group()
        if char == "\\" and _ESCAPE.match(text, start):
            char, end = _escape(text, start)
            value = change.get(char, char)
        elif char in change:
            end, value = start + 1, change[char]
        else:  # a backslash that starts no escape, an astral character that does not change
            m = pattern.search(text, start + 1)
            continue
        segment(pos, start, text[pos:start], True)
        if not value:
            hidden.append((start, end))
        elif unicodedata.combining(value[0]) and out:
            # a combining mark composes with the character before it: one segment for both
            prev, first, copied = out.pop(), orig.pop(), orig_end.pop() < 0
            size = canon.pop()
            if copied:
                segment(first, first + len(prev) - 1, prev[:-1], True)
                first, prev = first + len(prev) - 1, prev[-1]
            segment(first, end, unicodedata.normalize("NFKC", prev + value), False)
        else:
            segment(start, end, value, False)
        pos = end
        m = pattern.search(text, pos)
    if pos == 0:  # nothing changed
        return View(text)
    segment(pos, len(text), text[pos:], True)
    return View(
        "".join(out),
        tuple(canon),
        tuple(orig),
        tuple(orig_end),
        tuple(s for s, _ in hidden),
        tuple(_hidden_runs(text, hidden)),
    )


_LOW_SURROGATE = re.compile(r"\\u[dD][c-fC-F][0-9A-Fa-f]{2}")


def _escape(text: str, start: int) -> tuple[str, int]:
    """The character of the JSON `\\uXXXX` escape at `start` and where the escape ends (a surrogate pair
    takes two escapes; a lone surrogate reads as U+FFFD, as a lenient JSON decoder would)."""
    code = int(text[start + 2 : start + 6], 16)
    if 0xD800 <= code <= 0xDBFF and _LOW_SURROGATE.match(text, start + 6):
        low = int(text[start + 8 : start + 12], 16)
        return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), start + 12
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd", start + 6
    return chr(code), start + 6


def _hidden_runs(text: str, hidden: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Runs of dropped characters that hide text by themselves, wherever they are.

    Bidi embeddings, overrides and isolates (Trojan Source), tag characters outside subdivision flags,
    two or more variation selectors in a row (one after an emoji is ordinary), a byte-order mark after
    the start, two or more zero-width characters or soft hyphens in a row, and any other run of three
    or more. A single zero-width joiner (emoji, Persian), soft hyphen (hyphenation) or selector is left
    alone unless it sits inside a detected value (see `View.hides`).
    """
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(hidden):
        j = i
        while j + 1 < len(hidden) and hidden[j + 1][0] == hidden[j][1]:
            j += 1
        start, end = hidden[i][0], hidden[j][1]
        chars = "".join(_dropped(text, s, e) for s, e in hidden[i : j + 1])
        count = j - i + 1
        flag = _TAG.match(chars) is not None and _FLAG_TAGS.fullmatch(text, max(0, start - 1), end) is not None
        if not flag and (
            any(ch in _ALWAYS_HIDDEN for ch in chars)
            or _TAG.search(chars)
            or len(_VARIATION.findall(chars)) >= 2
            or ("\ufeff" in chars and start > 0)
            or (count >= 2 and all(ch in _ZERO_WIDTH or ch == "\u00ad" for ch in chars))
            or count >= 3
        ):
            runs.append((start, end))
        i = j + 1
    return runs


def _dropped(text: str, start: int, end: int) -> str:
    """The character dropped at original `[start, end)`: itself, or what its escape spells."""
    return _escape(text, start)[0] if text.startswith("\\u", start) else text[start:end]
