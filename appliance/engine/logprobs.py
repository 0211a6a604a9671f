"""Log probabilities as the client sees them: entries that follow the answer's text through every rewrite.

After sampling, the answer's text is changed twice before it leaves: stop strings cut it and hold back its tail
(harmony.py), and the output policy filter redacts it and holds back what may still grow into a match
(policy/stream.py). Each says what it released: how far into the raw text, the text shown for it, and the
edits it made (raw span, replacement). `Aligner` turns the raw entries (one per token, or per run of tokens
that only together decode to whole characters) into entries whose tokens concatenate exactly to the shown text:

- a token released unchanged keeps its entry (its log probability and alternatives);
- the tokens that overlap an edit become one entry: the shown text of their span, log probability `REPLACED`,
  no alternatives (an alternative at a redacted position could spell the value);
- shown text waits until the tokens it belongs to are whole, so each delta's entries are exactly its text;
- `close` (the stream was cut: a content filter stop, a stop string) gives what was released but not yet
  whole as one `REPLACED` entry.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Iterable
from functools import lru_cache

from openai_harmony import HarmonyEncoding

from appliance.engine.sampling import Score
from appliance.engine.types import Alternative, TokenLogprob
from appliance.vocabulary import vocabulary_bytes

REPLACED = -9999.0  # OpenAI's "very unlikely" value: this entry's text is not the model's tokens
Edit = tuple[int, int, str]  # a raw [start, end) span of the channel's text and what replaced it


@lru_cache(maxsize=1)
def token_bytes() -> dict[int, bytes]:
    """Every ordinary token's exact bytes, from the shipped vocabulary: built (about a second) off the event
    loop by the first request that asks for log probabilities (`Engine._prepare`)."""
    lines = vocabulary_bytes().splitlines()
    return {int(rank): base64.b64decode(tok) for tok, rank in (line.split() for line in lines if line)}


def entry(encoding: HarmonyEncoding, text: str, scores: list[Score]) -> TokenLogprob:
    """The raw entry for `text`, decoded from the tokens scored by `scores` (more than one only when a character
    spans tokens): their joint log probability, and the first token's alternatives."""
    top = []
    for token, logprob in scores[0].top:
        raw = token_bytes().get(token)
        if raw is None:  # a special token: its name
            raw = encoding.decode([token]).encode()
        top.append(Alternative(raw.decode("utf-8", "replace"), raw, logprob))
    return TokenLogprob(text, sum(s.logprob for s in scores), tuple(top))


class Aligner:
    """One per channel stream: `add` raw entries as their text is produced, `release` what the rewriter let out."""

    def __init__(self) -> None:
        self._entries: deque[TokenLogprob] = deque()  # raw entries not yet sent; the first starts at `_sent`
        self._sent = 0  # raw offset up to which entries have been sent
        self._released = 0  # raw offset up to which the rewriter has released text
        self._shown = ""  # the shown text of raw [_sent, _released), not yet sent
        self._edits: deque[Edit] = deque()  # the edits inside raw [_sent, _released), in order

    def add(self, entries: Iterable[TokenLogprob]) -> None:
        self._entries.extend(entries)

    def release(self, raw_end: int, shown: str, edits: Iterable[Edit] = ()) -> tuple[str, list[TokenLogprob]]:
        """The rewriter released raw text up to `raw_end` as `shown`, with `edits`: the text that may go now and
        its entries (whole tokens only; the rest waits for the next release)."""
        self._released, self._shown = raw_end, self._shown + shown
        self._edits.extend(edits)
        text: list[str] = []
        out: list[TokenLogprob] = []
        while (group := self._group()) is not None:
            count, end, length, changed = group
            piece, self._shown = self._shown[:length], self._shown[length:]
            raw = [self._entries.popleft() for _ in range(count)]
            while self._edits and self._edits[0][0] < end:
                self._edits.popleft()
            self._sent = end
            text.append(piece)
            out.append(raw[0] if not changed and raw[0].token == piece else TokenLogprob(piece, REPLACED))
        return "".join(text), out

    def close(self) -> tuple[str, list[TokenLogprob]]:
        """The stream ends here: released text not yet sent, as one entry; nothing more is aligned."""
        rest, self._shown = self._shown, ""
        self._entries.clear()
        self._edits.clear()
        return rest, [TokenLogprob(rest, REPLACED)] if rest else []

    def _group(self) -> tuple[int, int, int, bool] | None:
        """(entries, raw end, shown length, changed) of the next whole group of tokens: one token, or the run
        of tokens that overlap the same edits; None while its tokens are not all released."""
        start = end = need = self._sent
        count, shift, changed, seen = 0, 0, False, 0
        while count < len(self._entries):
            end += len(self._entries[count].token)
            count += 1
            if end > self._released:
                return None
            while seen < len(self._edits) and self._edits[seen][0] < end:
                a, b, replacement = self._edits[seen]
                changed, shift, need, seen = True, shift + len(replacement) - (b - a), max(need, b), seen + 1
            if end >= need and end > start:
                length = end - start + shift
                return (count, end, length, changed) if length <= len(self._shown) else None
        return None
