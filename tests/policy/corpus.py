"""A labelled corpus for the guardrail detectors: prose with planted PII and secrets at known spans, and
look-alikes (order numbers, hashes, versions, dates, UUIDs, masked passwords) that must not fire.

Product-independent test tooling: the tests use it for recall/precision, bench/guardrails for the
side-by-side run against Presidio. Deterministic for a given seed.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

STRUCTURED = ("pii.email", "pii.phone", "pii.payment_card", "pii.iban", "pii.us_ssn", "pii.ip_address")

_WORDS = (
    "the quarterly report shows that our team finished most of the migration work before the deadline "
    "and the customer asked whether we could send a summary of open issues to their operations group "
    "while the network upgrade continues next week please review the attached notes and confirm the "
    "schedule with facilities because several rooms will be unavailable during maintenance windows"
).split()
_FIRST = ("jane", "john", "maria", "wei", "ahmed", "olga", "pierre", "sara", "kenji", "lucia")
_LAST = ("doe", "smith", "garcia", "zhang", "khan", "ivanova", "martin", "cohen", "tanaka", "rossi")
_DOMAINS = ("example.com", "example.org", "mail.example.net", "corp.example.co.uk", "uni-example.edu")


@dataclass(frozen=True)
class Span:
    category: str
    start: int
    end: int


def _luhn_complete(body: str) -> str:
    for check in "0123456789":
        digits = body + check
        total = sum(
            (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 else d for i, d in enumerate(int(c) for c in reversed(digits))
        )
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.digits) for _ in range(n))


def email(r: random.Random) -> str:
    sep = r.choice([".", "_", "", "-"])
    return f"{r.choice(_FIRST)}{sep}{r.choice(_LAST)}{r.choice(['', str(r.randint(1, 99))])}@{r.choice(_DOMAINS)}"


def phone(r: random.Random) -> str:
    area, exch, line = f"{r.randint(2, 9)}{_digits(r, 2)}", f"{r.randint(2, 9)}{_digits(r, 2)}", _digits(r, 4)
    return r.choice(
        [
            f"({area}) {exch}-{line}",
            f"{area}-{exch}-{line}",
            f"{area}.{exch}.{line}",
            f"+1 {area} {exch} {line}",
            f"+1-{area}-{exch}-{line}",
            f"+44 20 {_digits(r, 4)} {_digits(r, 4)}",
            f"+49 30 {_digits(r, 8)}",
            f"+33 1 {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)}",
            f"06 {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)} {_digits(r, 2)}",
            f"+81 3-{_digits(r, 4)}-{_digits(r, 4)}",
        ]
    )


def card(r: random.Random) -> str:
    prefix, length = r.choice(
        [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15), ("34", 15), ("6011", 16), ("35", 16)]
    )
    number = _luhn_complete(prefix + _digits(r, length - len(prefix) - 1))
    if length == 15:
        sep = r.choice([" ", "-", ""])
        return sep.join([number[:4], number[4:10], number[10:]])
    sep = r.choice([" ", "-", ""])
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def iban(r: random.Random) -> str:
    country, bban = r.choice(
        [
            ("DE", lambda: _digits(r, 18)),
            ("FR", lambda: _digits(r, 23)),
            ("GB", lambda: "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + _digits(r, 14)),
            ("NL", lambda: "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + _digits(r, 10)),
            ("ES", lambda: _digits(r, 20)),
        ]
    )
    bban = bban()
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    compact = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    return compact if r.random() < 0.4 else " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def ssn(r: random.Random) -> str:
    area = r.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"


def ip_address(r: random.Random) -> str:
    if r.random() < 0.6:
        return ".".join(str(r.randint(1 if i == 0 else 0, 254)) for i in range(4))
    groups = [f"{r.randint(0, 0xFFFF):x}" for _ in range(8)]
    if r.random() < 0.5:
        return ":".join(groups)
    return f"2001:db8::{groups[0]}:{groups[1]}"


def _b64(r: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(r.choice(alphabet) for _ in range(n))


def _jwt(r: random.Random) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return (
        f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': _digits(r, 8), 'iat': r.randint(10**9, 2 * 10**9)})}."
        f"{_b64(r, 43, string.ascii_letters + string.digits + '-_')}"
    )


SECRET_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "secret.aws_access_key": lambda r: "AKIA" + _b64(r, 16, string.ascii_uppercase + "234567"),
    "secret.github_token": lambda r: r.choice(["ghp_", "gho_", "ghs_"]) + _b64(r, 36),
    "secret.slack_token": lambda r: f"xoxb-{_digits(r, 11)}-{_digits(r, 12)}-{_b64(r, 24)}",
    "secret.google_api_key": lambda r: "AIza" + _b64(r, 35, string.ascii_letters + string.digits + "-_"),
    "secret.stripe_key": lambda r: "sk_live_" + _b64(r, 24),
    "secret.jwt": _jwt,
    "secret.private_key": lambda r: (
        "-----BEGIN RSA PRIVATE KEY-----\n"
        + "\n".join(_b64(r, 64, string.ascii_letters + string.digits + "+/") for _ in range(4))
        + "\n-----END RSA PRIVATE KEY-----"
    ),
}

PII_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "pii.email": email,
    "pii.phone": phone,
    "pii.payment_card": card,
    "pii.iban": iban,
    "pii.us_ssn": ssn,
    "pii.ip_address": ip_address,
}

_PII_FRAMES = (
    "please contact {} about the invoice",
    "my number is {} if anything changes",
    "send it to {} today",
    "the account {} was charged twice",
    "reach me at {}",
    "records show {} for this customer",
)
_SECRET_FRAMES = ("the deploy failed with key {} in the logs", "use {} for the staging job", "token {} expired")


def lookalike(r: random.Random) -> str:
    """Text shaped like an entity that is not one."""
    return r.choice(
        [
            lambda: f"order ORD-{r.randint(2019, 2026)}-{_digits(r, 6)}",
            lambda: f"commit {_b64(r, 40, '0123456789abcdef')}",
            lambda: f"sha256 {_b64(r, 64, '0123456789abcdef')}",
            lambda: f"version v{r.randint(0, 9)}.{r.randint(0, 30)}.{r.randint(0, 99)}",
            lambda: f"build {r.randint(1, 12)}.0.{_digits(r, 5)}",
            lambda: (
                f"due {r.randint(2019, 2026)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d} at {r.randint(0, 23):02d}:{r.randint(0, 59):02d}:00"
            ),
            lambda: f"on {r.randint(1, 28):02d}/{r.randint(1, 12):02d}/{r.randint(2019, 2026)}",
            lambda: (
                f"id {_b64(r, 8, '0123456789abcdef')}-{_b64(r, 4, '0123456789abcdef')}-4{_b64(r, 3, '0123456789abcdef')}-a{_b64(r, 3, '0123456789abcdef')}-{_b64(r, 12, '0123456789abcdef')}"
            ),
            lambda: f"total ${r.randint(1, 999)},{_digits(r, 3)}.{_digits(r, 2)}",
            lambda: f"tracking 1Z{_b64(r, 6, string.ascii_uppercase + string.digits)}{_digits(r, 10)}",
            lambda: f"ISBN 978-{r.randint(0, 9)}-{_digits(r, 2)}-{_digits(r, 6)}-{r.randint(0, 9)}",
            lambda: f"reference {_digits(r, 12)}",
            lambda: "password: ********",
            lambda: "api_key = <YOUR_API_KEY>",
            lambda: f"extension {_digits(r, 4)} in room {_digits(r, 3)}",
            lambda: f"{r.randint(1, 99)} {r.randint(100, 999)} {r.randint(100, 999)} units shipped",
        ]
    )()


def generate(target_chars: int, seed: int = 7, *, secrets: bool = True) -> tuple[str, list[Span]]:
    """Mixed text of about `target_chars` characters and the spans of every planted entity."""
    r = random.Random(seed)
    parts: list[str] = []
    spans: list[Span] = []
    size = 0
    makers = list(PII_MAKERS.items()) + (list(SECRET_MAKERS.items()) if secrets else [])
    while size < target_chars:
        roll = r.random()
        if roll < 0.25:
            category, maker = r.choice(makers)
            frames = _SECRET_FRAMES if category.startswith("secret.") else _PII_FRAMES
            before, after = r.choice(frames).split("{}")
            value = maker(r)
            sentence = f"{before.capitalize()}{value}{after}. "
            spans.append(Span(category, size + len(before), size + len(before) + len(value)))
        elif roll < 0.5:
            sentence = f"The {lookalike(r)} is noted. "
        else:
            sentence = " ".join(r.choice(_WORDS) for _ in range(r.randint(6, 18))).capitalize() + ". "
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts), spans


def prose(target_chars: int, seed: int = 7) -> str:
    """Plain sentences with no entity and no look-alike: what most prompts are."""
    r = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < target_chars:
        parts.append(" ".join(r.choice(_WORDS) for _ in range(r.randint(6, 18))).capitalize() + ". ")
        size += len(parts[-1])
    return "".join(parts)


def score(
    gold: list[Span], found: list[tuple[str, int, int]], categories: tuple[str, ...]
) -> dict[str, tuple[float, float, int]]:
    """Per category: (recall, precision, gold count). A finding counts when it overlaps a gold span of its category."""
    out: dict[str, tuple[float, float, int]] = {}
    for category in categories:
        g = sorted((s.start, s.end) for s in gold if s.category == category)
        f = sorted((s, e) for c, s, e in found if c == category)
        hit_gold = sum(1 for gs, ge in g if _overlaps(f, gs, ge))
        hit_found = sum(1 for fs, fe in f if _overlaps(g, fs, fe))
        out[category] = (hit_gold / len(g) if g else 1.0, hit_found / len(f) if f else 1.0, len(g))
    return out


def _overlaps(sorted_spans: list[tuple[int, int]], start: int, end: int) -> bool:
    import bisect

    i = bisect.bisect_left(sorted_spans, (end, end))
    return any(s < end and start < e for s, e in sorted_spans[max(0, i - 3) : i])
