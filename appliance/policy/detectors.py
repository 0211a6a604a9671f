"""The guardrail detectors: PII, secrets, prompt injection and per-pack topics, compiled once.

Speed comes from CPython's regex engine only scanning fast when a pattern starts with a literal or one
plain character class: every detector is therefore a cheap *trigger* pass (a literal such as "@", "://",
"eyJ", or the class of digits) followed by exact patterns and checksums run only where a trigger hit.
Case-insensitive phrases are matched on one lower-cased copy of the text instead of with re.IGNORECASE,
which disables those fast paths. Findings carry the category and span, never the matched text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from appliance.policy import validators
from appliance.policy.phrases import INJECTION_PATTERNS, INJECTION_PHRASES, ROLEPLAY_PHRASES
from appliance.policy.phraseset import PhraseSet

PII = ("pii.email", "pii.phone", "pii.payment_card", "pii.iban", "pii.us_ssn", "pii.ip_address")
SECRETS = ("secret.private_key", "secret.aws_access_key", "secret.google_api_key", "secret.github_token",
           "secret.slack_token", "secret.stripe_key", "secret.jwt", "secret.url_password",
           "secret.password_assignment")
INJECTION = ("injection.control_token", "injection.override", "injection.roleplay", "injection.hidden_text")
CATEGORIES = PII + SECRETS + INJECTION


@dataclass(frozen=True, slots=True)
class Finding:
    """What fired and where: `[start, end)` in the scanned text. The matched text is never kept."""

    category: str
    start: int
    end: int
    message: int | None = None  # index of the request message it was found in

    @property
    def detector(self) -> str:
        return self.category.split(".", 1)[0]

    def as_dict(self) -> dict[str, object]:
        """The audit/API form: detector, category, span and message index."""
        return {"detector": self.detector, "category": self.category, "start": self.start, "end": self.end,
                "message": self.message}


Emit = Callable[[str, int, int], None]

# --- numbers: one trigger pass over digit runs, then exact shapes on the few runs found -------------
_DIGIT_TRIGGER = re.compile(r"\d[\d .\-/()]{5,}\d|\d\d ?[A-Z]")
_SSN = re.compile(r"(?<![\w\-.])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w\-]|\.\d)")
_CARD = re.compile(r"(?<![\w+\-.])(?:\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{4}([ -])\d{6}\2\d{4,5}"
                   r"|\d{13,19})(?![\w\-]|[.,]\d)")
_IPV4 = re.compile(r"(?<![\w.\-])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                   r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w\-]|\.\d)")
_NANP = re.compile(r"(?<![\w+\-.])(?:\+?1[ .-]?)?(?:\((\d{3})\) ?|(\d{3})([ .-]))(\d{3})[ .-]\d{4}(?![\w\-]|\.\d)")
_INTL = re.compile(r"(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?![\w\-]|\.\d)")
_TRUNK = re.compile(r"(?<![\w+\-.])0[1-9]\d{0,3}[ -]\d{2,4}(?:[ -]\d{2,4}){1,3}(?![\w\-]|\.\d)")
_IBAN = re.compile(r"[A-Z]{2}\d\d(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_IBAN_SPACED = re.compile(r"[A-Z]{2}\d\d(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?(?![A-Za-z0-9])")


def _numbers(text: str, emit: Emit) -> None:
    covered = 0  # end of the last IBAN: its digit groups are not phone numbers
    for m in _DIGIT_TRIGGER.finditer(text):
        start, end = m.span()
        if start < covered:
            continue
        if start >= 2 and text[start - 2:start].isupper() and text[start - 2:start].isalpha():
            covered = _iban(text, start - 2, emit)
            if covered:
                continue
        if text[end - 1].isalpha():
            continue
        if start and text[start - 1] in "+(":
            start -= 1
        _number_run(text, start, end, emit)


def _iban(text: str, start: int, emit: Emit) -> int:
    """End of the IBAN-shaped text at `start` (emitted when its checksum holds), else 0.

    A shape with a bad checksum still covers its digits: they are a mistyped account, not a card.
    """
    if start and text[start - 1].isalnum():
        return 0
    for pattern in (_IBAN_SPACED, _IBAN):
        m = pattern.match(text, start)
        if m:
            compact = m.group().replace(" ", "")
            # the greedy match may swallow a following word; cut it to the country's length
            length = validators.IBAN_LENGTHS.get(compact[:2], 0)
            if len(compact) >= length and validators.iban_ok(compact[:length]):
                end = _span_end(text, start, length)
                emit("pii.iban", start, end)
                return end
            return m.end()
    return 0


def _span_end(text: str, start: int, alnum_count: int) -> int:
    """End of the span that holds `alnum_count` letters and digits from `start` (spaces skipped)."""
    i = start
    while alnum_count:
        if text[i] != " ":
            alnum_count -= 1
        i += 1
    return i


def _number_run(text: str, start: int, end: int, emit: Emit) -> None:
    """Exact shapes inside one run of digits and separators, first match wins per span."""
    pos = start
    while pos < end:
        best = None
        for kind, pattern in _NUMBER_SHAPES:
            m = pattern.search(text, pos, end)
            if m and (best is None or m.start() < best[1].start()) and _shape_ok(kind, m):
                best = (kind, m)
        if best is None:
            return
        kind, m = best
        emit(kind, m.start(), m.end())
        pos = m.end()


def _shape_ok(kind: str, m: re.Match[str]) -> bool:
    if kind == "pii.us_ssn":
        return validators.ssn_ok(m.group(1), m.group(3), m.group(4))
    if kind == "pii.payment_card":
        return validators.card_ok(validators.digits_of(m.group()))
    if kind == "pii.phone" and m.re is _NANP:
        return validators.nanp_ok(m.group(1) or m.group(2), m.group(4))
    if kind == "pii.phone":
        return 8 <= len(validators.digits_of(m.group())) <= (15 if m.re is _INTL else 11)
    return True


_NUMBER_SHAPES = (("pii.us_ssn", _SSN), ("pii.payment_card", _CARD), ("pii.ip_address", _IPV4),
                  ("pii.phone", _NANP), ("pii.phone", _INTL), ("pii.phone", _TRUNK))

# --- e-mail: find "@" (a literal: fast), then the local part backwards and the domain forwards -------
_LOCAL_TAIL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}\Z")
_DOMAIN = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])")


def _emails(text: str, emit: Emit) -> None:
    at = text.find("@")
    while at != -1:
        domain = _DOMAIN.match(text, at)
        if domain:
            local = _LOCAL_TAIL.search(text, max(0, at - 64), at)
            if local and not _in_url_authority(text, local.start()):
                emit("pii.email", local.start(), domain.end())
        at = text.find("@", at + 1)


def _in_url_authority(text: str, start: int) -> bool:
    """"user:pass@host" inside a URL is a credential (reported as such), not an e-mail address."""
    if not start or text[start - 1] != ":":
        return False
    word_start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
    return "://" in text[word_start:start]


# --- IPv6: a ":" literal, then the hex-and-colon run around it, checked by ipaddress ---------------
_IPV6_TRIGGER = re.compile(r":[0-9A-Fa-f]{0,4}:")
_HEXCOLON = frozenset("0123456789abcdefABCDEF:.")


def _ipv6(text: str, emit: Emit) -> None:
    pos = 0
    while True:
        m = _IPV6_TRIGGER.search(text, pos)
        if m is None:
            return
        start, end = m.start(), m.end()
        while start > 0 and text[start - 1] in _HEXCOLON and m.start() - start < 40:
            start -= 1
        while end < len(text) and text[end] in _HEXCOLON and end - start < 46:
            end += 1
        candidate = text[start:end].strip(".")
        boundary = (start == 0 or not text[start - 1].isalnum()) and (end >= len(text) or not text[end].isalnum())
        has_digit = any(ch.isdigit() for ch in candidate)  # "a::b" in code is not an address
        if boundary and has_digit and validators.ipv6_ok(candidate):
            emit("pii.ip_address", start, start + len(candidate))
        pos = end


# --- secrets with a recognisable prefix: each pattern starts with a literal --------------------------
_PREFIXED = (
    ("secret.private_key", re.compile(
        r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]{0,16384}?-----END \1PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,\-]*)")),
    ("secret.aws_access_key", re.compile(r"A(?:KIA|SIA|BIA|CCA)[A-Z2-7]{16}(?![A-Za-z0-9])")),
    ("secret.google_api_key", re.compile(r"AIza[0-9A-Za-z_\-]{35}(?![A-Za-z0-9_\-])")),
    ("secret.github_token", re.compile(r"gh(?:[pousr]_[A-Za-z0-9]{36}|ithub_pat_[A-Za-z0-9_]{60,})(?![A-Za-z0-9_])")),
    ("secret.slack_token", re.compile(r"xox[abposr]-[A-Za-z0-9]{1,}-[A-Za-z0-9\-]{8,}")),
    ("secret.stripe_key", re.compile(r"k_live_[0-9A-Za-z]{16,}")),
    ("secret.jwt", re.compile(r"eyJ[A-Za-z0-9_\-]{6,}\.eyJ[A-Za-z0-9_\-]{6,}(?:\.[A-Za-z0-9_\-]*)?")),
)
_URL_PASSWORD = re.compile(r"://[^\s:/@]{1,128}:([^\s/@]{1,256})@")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _prefixed_secrets(text: str, emit: Emit) -> None:
    for category, pattern in _PREFIXED:
        for m in pattern.finditer(text):
            start = m.start()
            if category == "secret.stripe_key":  # the literal skips "s"/"r" so the scan stays fast
                if start == 0 or text[start - 1] not in "sr":
                    continue
                start -= 1
            if start and text[start - 1] in _WORD_CHARS:
                continue
            emit(category, start, m.end())
    for m in _URL_PASSWORD.finditer(text):
        emit("secret.url_password", m.start(1), m.end(1))


# --- phrases on the lower-cased text: one trie-triggered pass for injection, assignments and topics ---
_ASSIGNMENT_KEYS = ("password", "passwd", "passphrase", "pwd", "secret", "secret_key", "client_secret", "api_key",
                    "apikey", "api-key", "access_key", "auth_token", "access_token", "token")
_ASSIGNMENT_VALUE = (r"[\"']?\s{0,3}(?::|=>?)\s{0,3}[\"']?"
                     r"(?![\"'*<{$%]|x{4}|\.\.\.|none\b|null\b|true\b|false\b|redacted|changeme\b|your)"
                     r"([^\s\"',;)}\]]{6,128})")
_TAGS = re.compile("[\U000e0000-\U000e007f\u200b-\u200f\u202a-\u202e\u2060-\u2064]{3,}")
CONTROL_TOKEN = re.compile(r"<\|[^|<>\s]{1,64}\|>")


def _base_phrases(phrases: PhraseSet) -> PhraseSet:
    for anchor, pattern in INJECTION_PATTERNS:
        phrases.add_pattern("injection.override", anchor, pattern, before=160)
    for phrase in INJECTION_PHRASES:
        phrases.add_phrase("injection.override", phrase)
    for phrase in ROLEPLAY_PHRASES:
        phrases.add_phrase("injection.roleplay", phrase)
    for key in _ASSIGNMENT_KEYS:
        phrases.add_pattern("secret.password_assignment", key, rf"(?<![\w-]){re.escape(key)}{_ASSIGNMENT_VALUE}",
                            group=1)
    return phrases


def lowered(text: str) -> str:
    """`text.lower()` with the same length (U+0130 is the one code point whose lower case is longer)."""
    return (text if "\u0130" not in text else text.replace("\u0130", "i")).lower()


class Scanner:
    """All detectors plus the pack's topics, compiled once; `scan` is safe to call from many threads."""

    def __init__(self, topics: dict[str, tuple[list[str], list[str]]] | None = None) -> None:
        self._phrases = _base_phrases(PhraseSet())
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for name, (phrases, patterns) in (topics or {}).items():
            for phrase in phrases:
                self._phrases.add_phrase(f"topic.{name}", phrase)
            self._patterns.extend((f"topic.{name}", re.compile(pattern)) for pattern in patterns)

    def scan(self, text: str) -> list[Finding]:
        """Every finding in `text`, ordered by start; overlapping findings are all kept."""
        found: list[Finding] = []

        def emit(category: str, start: int, end: int) -> None:
            found.append(Finding(category, start, end))

        _numbers(text, emit)
        if "@" in text:
            _emails(text, emit)
        if ":" in text:
            _ipv6(text, emit)
        _prefixed_secrets(text, emit)
        if "<|" in text:
            for m in CONTROL_TOKEN.finditer(text):
                emit("injection.control_token", m.start(), m.end())
        if not text.isascii():
            for m in _TAGS.finditer(text):
                emit("injection.hidden_text", m.start(), m.end())
        for category, start, end in self._phrases.finditer(lowered(text)):
            emit(category, start, end)
        for category, pattern in self._patterns:
            for m in pattern.finditer(text):
                emit(category, m.start(), m.end())
        found.sort(key=lambda f: (f.start, -f.end))
        return found
