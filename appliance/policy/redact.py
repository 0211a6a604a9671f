"""Rewriting text around findings: placeholders for redacted spans, harmless look-alikes for control tokens.

Harmony control tokens in client text are rewritten with FULLWIDTH VERTICAL LINE (U+FF5C) in place of
"|": a reader still sees what was written, but the tokenizer can no longer turn it into a special token,
so client text can never close its own message or open a system one.
"""

from __future__ import annotations

from collections.abc import Iterable

from appliance.policy.detectors import CONTROL_TOKEN, Finding


def placeholder(category: str) -> str:
    return f"[REDACTED:{category}]"


def neutralise(text: str) -> str:
    """`text` with every `<|...|>` special-token look-alike made inert."""
    if "<|" not in text:
        return text
    return CONTROL_TOKEN.sub(lambda m: m.group().replace("|", "\uff5c"), text)


def redact(text: str, findings: Iterable[Finding]) -> str:
    """Replace each finding's span (overlaps merged, first category named) and neutralise the rest."""
    out: list[str] = []
    pos = 0
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        if finding.end <= pos:
            continue
        if finding.start >= pos:
            out.append(text[pos : finding.start])
            out.append(placeholder(finding.category))
        pos = max(pos, finding.end)
    out.append(text[pos:])
    return neutralise("".join(out))
