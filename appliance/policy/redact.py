"""Rewriting text around findings: placeholders for redacted spans, harmless look-alikes for control tokens.

Harmony control tokens in client text are rewritten with FULLWIDTH VERTICAL LINE (U+FF5C) in place of
"|": a reader still sees what was written, but the tokenizer can no longer turn it into a special token,
so client text can never close its own message or open a system one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from appliance.policy.detectors import CONTROL_TOKEN, Finding


def placeholder(category: str) -> str:
    return f"[REDACTED:{category}]"


def neutralise(text: str) -> str:
    """`text` with every `<|...|>` special-token look-alike made inert."""
    if "<|" not in text:
        return text
    return CONTROL_TOKEN.sub(lambda m: m.group().replace("|", "\uff5c"), text)


class Edit(NamedTuple):
    """`text[start:end]` was replaced by `replacement`."""

    start: int
    end: int
    replacement: str


def redact(text: str, findings: Iterable[Finding]) -> str:
    """Replace each finding's span (overlaps merged, first category named) and neutralise the rest."""
    return redacted(text, findings)[0]


def redacted(text: str, findings: Iterable[Finding]) -> tuple[str, list[Edit]]:
    """`redact`, and its edits in order (offsets in `text`): what a reader of the output must know to tell
    which of the original characters were replaced (the log probabilities of a redacted answer)."""
    edits: list[Edit] = []
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        pos = edits[-1].end if edits else 0
        if finding.end <= pos:
            continue
        if finding.start >= pos:
            edits.append(Edit(finding.start, finding.end, placeholder(finding.category)))
        else:  # overlaps the previous span: merged into it
            edits[-1] = edits[-1]._replace(end=finding.end)
    out = "".join(text[a.end : b.start] + b.replacement for a, b in zip([Edit(0, 0, ""), *edits], edits))
    out += text[edits[-1].end if edits else 0 :]
    final = neutralise(out)
    if final == out:
        return out, edits
    # neutralised on the whole output, as before; a changed "|" is never inside a placeholder
    bars = [_source(at, edits) for at, (a, b) in enumerate(zip(out, final)) if a != b]
    return final, sorted(edits + [Edit(at, at + 1, "\uff5c") for at in bars])


def _source(at: int, edits: list[Edit]) -> int:
    """Where output character `at`, which no edit wrote, stands in the original text."""
    shift = 0
    for edit in edits:
        if edit.start + shift > at:
            break
        shift += len(edit.replacement) - (edit.end - edit.start)
    return at - shift
