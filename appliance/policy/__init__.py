"""Policy packs, guardrails, input decisions and the streaming output filter (plain Python, no Ray/FastAPI).

policy = PolicySet.load(Path("policies"))
engine = PolicyEngine(policy)
engine.check_rate(principal, tokens=prompt_tokens)          # raises RateLimited(retry_after)
decision = engine.evaluate_input(request, principal)        # allow | redact | deny
out = decision.output_filter()                              # per response
piece = out.feed("final", text); ...; tail = out.finish()   # out.stopped -> finish_reason content_filter
"""

from appliance.policy.detectors import CATEGORIES, Finding, Scanner
from appliance.policy.engine import Decision, Message, PolicyEngine, PolicyRequest
from appliance.policy.errors import PolicyError, RateLimited
from appliance.policy.pack import SIGNATURE_NAME, PolicySet
from appliance.policy.redact import neutralise
from appliance.policy.stream import FilterOutput, OutputFilter

__all__ = [
    "CATEGORIES",
    "Decision",
    "FilterOutput",
    "Finding",
    "Message",
    "OutputFilter",
    "PolicyEngine",
    "PolicyError",
    "PolicyRequest",
    "PolicySet",
    "RateLimited",
    "SIGNATURE_NAME",
    "Scanner",
    "neutralise",
]
