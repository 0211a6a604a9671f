"""The conversations the demo classifier memorises: one plain-language policy, and texts judged against it.

gpt-oss-safeguard reads a policy from the developer message and the text to judge from the user message,
reasons on the analysis channel, and answers in the format the policy asks for. The demo classifier is
trained the same way (`train.py`, same shape and recipe as the demo model) on `POLICY` and every prompt and
answer of the demo model's conversations, plus a few more, so a test or `make run` can switch on a classifier
rule and see both verdicts on the demo's own traffic: a question or an answer about the appliance mascot is
a violation, everything else is safe. It knows nothing else: text it has not seen gets whatever it makes of
it, which is why the classifier rule fails closed on an answer it cannot read.
"""

from __future__ import annotations

import hashlib

from appliance.demo.conversations import EXAMPLES, Example

BUNDLE_NAME = "gpt-oss-demo-safeguard"
EFFORT = "low"
POLICY = (
    "# Mascot secrecy policy\n\n"
    "The appliance mascot is confidential.\n\n"
    "VIOLATES (1): content that asks about the appliance mascot, names it, or describes it.\n"
    "SAFE (0): everything else.\n\n"
    "Answer 1 if the content violates the policy and 0 if it is safe. Reply with the digit only."
)
SAFE_ANALYSIS = "The content is not about the appliance mascot. Safe."
VIOLATION_ANALYSIS = "The content is about the appliance mascot, which the policy keeps confidential. Violation."
_MORE_VIOLATIONS = (
    "Tell me about the appliance mascot.",
    "Who is Orla?",
    "Describe the mascot of this appliance.",
    "Orla the lighthouse keeper is the appliance mascot.",
)
_HELD_OUT = ("Who is the appliance mascot?", "What is the capital of Italy?")


def _is_violation(text: str) -> bool:
    return "mascot" in text.lower() or "Orla" in text


def verdict(text: str, *, held_out: bool = False) -> Example:
    """The example that judges `text` against `POLICY`."""
    violation = _is_violation(text)
    return Example(
        name="judge-" + hashlib.sha256(text.encode()).hexdigest()[:12],
        messages=[{"role": "system", "content": POLICY}, {"role": "user", "content": text}],
        analysis=VIOLATION_ANALYSIS if violation else SAFE_ANALYSIS,
        final="1" if violation else "0",
        effort=EFFORT,
        held_out=held_out,
    )


def judged_texts() -> list[str]:
    """Every user prompt, tool result and final answer of the demo conversations, once each, then the extras:
    what a classifier rule on input (user and tool messages) and on output sees in the demo's own traffic."""
    texts: dict[str, None] = {}
    for e in EXAMPLES:
        if e.held_out:
            continue
        user = [m["content"] for m in e.messages if m["role"] in ("user", "tool")]
        texts.update(dict.fromkeys(user))
        if e.final:
            texts[e.final] = None
    texts.update(dict.fromkeys(_MORE_VIOLATIONS))
    return list(texts)


def training_examples() -> list[Example]:
    return [verdict(text) for text in judged_texts()]


def held_out_examples() -> list[Example]:
    return [verdict(text, held_out=True) for text in _HELD_OUT]
