"""The guardrail detectors: PII, secrets, prompt injection and per-pack topics, compiled once.

Every detector is an exact `re` pattern (plus checksums) that only runs where its *trigger* hit: a
literal it starts with ("@", "://", "eyJ"), the run of digits a number lives in, a part of a number
shape. All triggers run in one Hyperscan pass (triggers.py), so the text is scanned once at GB/s and
Python only works at hits; findings are the same as running each pattern over the whole text.
Case-insensitive phrases are matched on one lower-cased copy of the text instead of with re.IGNORECASE.
Findings carry the category and span, never the matched text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

from appliance.policy import validators
from appliance.policy.canon import canonical, warm
from appliance.policy.phrases import INJECTION_PATTERNS, INJECTION_PHRASES, ROLEPLAY_PHRASES
from appliance.policy.phraseset import PhraseSet
from appliance.policy.triggers import CASELESS, SOM, UTF8, Triggers, decimal_class

PII = (
    "pii.email",
    "pii.phone",
    "pii.payment_card",
    "pii.iban",
    "pii.us_ssn",
    "pii.ip_address",
    "pii.uk_nino",
    "pii.de_tax_id",
    "pii.fr_nir",
    "pii.it_fiscal_code",
    "pii.es_dni",
)
SECRETS = (
    "secret.private_key",
    "secret.aws_access_key",
    "secret.google_api_key",
    "secret.github_token",
    "secret.slack_token",
    "secret.stripe_key",
    "secret.jwt",
    "secret.url_password",
    "secret.password_assignment",
)
HIDDEN = "injection.hidden_text"
INJECTION = ("injection.control_token", "injection.override", "injection.roleplay", HIDDEN)
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
        return {
            "detector": self.detector,
            "category": self.category,
            "start": self.start,
            "end": self.end,
            "message": self.message,
        }


Emit = Callable[[str, int, int], None]

# --- numbers: one trigger pass over digit runs, then exact shapes on the few runs found -------------
_DIGIT_TRIGGER = re.compile(r"\d[\d .\-/()]{5,}\d|\d\d[ ./\-]?[A-Z]")
_SSN = re.compile(r"(?<![\w\-./])(\d{3})([-. /])(\d{2})\2(\d{4})(?![\w\-/]|\.\d)")
_CARD = re.compile(
    r"(?<![\w+\-./])(?:\d{4}([ ./-])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{4}([ ./-])\d{6}\2\d{4,5}"
    r"|\d{12,19})(?![\w\-/]|[.,]\d)"
)
_IPV4 = re.compile(
    r"(?<![\w.\-])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
    r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w\-]|\.\d)"
)
_EXTENSION = re.compile(r"[ \t]*(?:ext\.?|extension|x|#)[ \t]*\d{1,6}(?![\w\-])", re.IGNORECASE)
# shapes that are never phone numbers even when their own check fails: SSN and card look-alikes, dates
_NOT_PHONE = re.compile(
    r"\d{3}([-. /])\d{2}\1\d{4}|\d{4}([ ./-])\d{4}\2\d{4}\2\d{4}|\d{4}[./-]\d{1,2}[./-]\d{1,2}"
    r"|\d{1,2}([./-])\d{1,2}\3(?:\d{2}|\d{4})|(?:\d{1,3}\.){3}\d{1,3}"
    r"|(?:97[89]-)?\d{1,5}-\d{1,7}-\d{1,7}-\d"  # hyphenated ISBN
    r"|.*[-./]{2}.*"
)
_PHONE_AFTER = frozenset("-._/:")  # a run glued to a word by one of these is a code, not a number
_SEPARATOR = re.compile(r"[^A-Za-z0-9]")  # what a compact identifier leaves out (a regex: no loop in Python)
_IBAN = re.compile(r"[A-Z]{2}\d\d(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
# grouped by fours with one separator (the canonical view has turned every dash into "-", every space into " ")
_IBAN_GROUPED = re.compile(r"[A-Z]{2}\d\d([ ./-])[A-Z0-9]{4}(?:\1[A-Z0-9]{4}){1,6}(?:\1[A-Z0-9]{1,3})?(?![A-Za-z0-9])")


def _digit_triggers() -> list[tuple[str, int]]:
    """Where `_DIGIT_TRIGGER` can match: the first digit of each long enough run of digits and
    separators (one hit per run: the run must end), and each "12A"/"12 A" of its second branch;
    then one trigger per `_SHAPE_TRIGGERS` entry (ASCII digits: the canonical view has no others)."""
    d = f"[{decimal_class()}]"
    return [
        (rf"{d}[{d[1:-1]} .\-/()]{{5,}}{d}[ .\-/()]*(?:[^{d[1:-1]} .\-/()]|\z)", UTF8 | SOM),
        (rf"{d}{d}[ ./\-]?[A-Z]", UTF8 | SOM),
        *((shape.replace("D", "[0-9]"), 0) for _, shape in _SHAPE_TRIGGERS),  # ASCII \b: no UCP
    ]


# (index in `_NUMBER_SHAPES`, a part of that shape without lookarounds, D a digit): every match of the
# shape holds a match of the part, so a run where no part ends is not searched for the shape
# shape, as its lookarounds allow only at word boundaries (\b): one hit per candidate, not one per digit of
# every longer run (Hyperscan reports every end, and each hit costs Python a call)
_SHAPE_TRIGGERS = (
    (0, r"\bD{3}[-. /]D{2}[-. /]D{4}\b"),
    (1, r"\bD{12,19}\b"),
    (1, r"\bD{4}[ ./\-]D{4}[ ./\-]D{4}[ ./\-]D{4}\b"),
    (1, r"\bD{4}[ ./\-]D{6}[ ./\-]D{4}"),
    (2, r"\bD{1,3}\.D{1,3}\.D{1,3}\.D"),
)
_SHAPES_END = 2 + len(_SHAPE_TRIGGERS)  # trigger index after the digit triggers


def _numbers(
    text: str,
    hits: list[tuple[int, int]],
    shape_hits: list[list[tuple[int, int]]],
    emit: Emit,
    taken: list[tuple[int, int]],
) -> None:
    """`shape_hits`: the shape triggers' hits; a run is only searched for the shapes that end in it.
    A run that is no SSN, card or address is a phone candidate; runs inside `taken` (national IDs) are skipped."""
    by_end = sorted((end, _SHAPE_TRIGGERS[i][0]) for i, spans in enumerate(shape_hits) for _, end in spans)
    ends = [end for end, _ in by_end]
    covered = 0  # end of the last IBAN: its digit groups are not phone numbers
    taken_ends = [e for _, e in taken]
    for m in finditer_at(_DIGIT_TRIGGER, text, hits):
        start, end = m.span()
        i = bisect.bisect_right(taken_ends, start)  # the first identifier ending after the run starts
        if start < covered or (i < len(taken) and taken[i][0] < end):
            continue
        if start >= 2 and text[start - 2 : start].isupper() and text[start - 2 : start].isalpha():
            covered = _iban(text, start - 2, emit)
            if covered:
                continue
        if text[end - 1].isalpha():
            continue
        if start and text[start - 1] in "+(":
            start -= 1
        if text[start] == "+" and _phone(text, start, end, emit):
            continue  # "+" names a country: "+688 90 1234" is Tuvalu, not an SSN
        first, last = bisect.bisect_right(ends, start), bisect.bisect_right(ends, end)
        kinds = {shape for _, shape in by_end[first:last]}
        if not (kinds and _number_run(text, start, end, [s for i, s in enumerate(_NUMBER_SHAPES) if i in kinds], emit)):
            _phone(text, start, end, emit)


def _phone(text: str, start: int, end: int, emit: Emit) -> bool:
    """The run `[start, end)` (and an extension after it) when libphonenumber takes it for a number."""
    tel = text[max(0, start - 4) : start].lower() == "tel:"  # RFC 3966: "tel:+1-201-555-0123"
    if start and (text[start - 1].isalnum() or text[start - 1] in _PHONE_AFTER) and not tel:
        return False
    if end < len(text) and (text[end].isalnum() and text[end] not in "xX" or text[end] in "-:"):
        return False
    number = text[start:end]
    if _NOT_PHONE.fullmatch(number) or not validators.phone_ok(number):
        return False
    extension = _EXTENSION.match(text, end)
    emit("pii.phone", start, extension.end() if extension else end)
    return True


def _iban(text: str, start: int, emit: Emit) -> int:
    """End of the IBAN-shaped text at `start` (emitted when its checksum holds), else 0.

    A shape with a bad checksum still covers its digits: they are a mistyped account, not a card.
    """
    if start and text[start - 1].isalnum():
        return 0
    for pattern in (_IBAN_GROUPED, _IBAN):
        m = pattern.match(text, start)
        if m:
            compact = _SEPARATOR.sub("", m.group())
            # the greedy match may swallow a following word; cut it to the country's length
            length = validators.IBAN_LENGTHS.get(compact[:2], 0)
            if len(compact) >= length and validators.iban_ok(compact[:length]):
                end = _span_end(text, start, length)
                emit("pii.iban", start, end)
                return end
            return m.end()
    return 0


def _span_end(text: str, start: int, alnum_count: int) -> int:
    """End of the span that holds `alnum_count` letters and digits from `start` (separators skipped)."""
    i = start
    while alnum_count:
        if text[i].isalnum():
            alnum_count -= 1
        i += 1
    return i


def _number_run(text: str, start: int, end: int, shapes: list[tuple[str, re.Pattern[str]]], emit: Emit) -> bool:
    """Exact `shapes` inside one run of digits and separators, first match wins per span; whether any fired."""
    pos = start
    while pos < end:
        best = None
        for kind, pattern in shapes:
            m = pattern.search(text, pos, end)
            if m and (best is None or m.start() < best[1].start()) and _shape_ok(kind, m):
                best = (kind, m)
        if best is None:
            return pos > start
        kind, m = best
        emit(kind, m.start(), m.end())
        pos = m.end()
    return True


def _shape_ok(kind: str, m: re.Match[str]) -> bool:
    if kind == "pii.us_ssn":
        return validators.ssn_ok(m.group(1) + m.group(3) + m.group(4))
    if kind == "pii.payment_card":
        return validators.card_ok(validators.digits_of(m.group()))
    return True


_NUMBER_SHAPES = (("pii.us_ssn", _SSN), ("pii.payment_card", _CARD), ("pii.ip_address", _IPV4))

# --- national identifiers: each shape is a Hyperscan trigger of its own, stdnum decides -------------------
# (category, exact shape, trigger: the shape without back-references, between word boundaries as its
# lookarounds require, # a digit, ~ an optional separator).
# Groups are written with one separator throughout: none, a space, "-", "." or "/" (the canonical view
# has turned every dash, every space and every look-alike dot or slash into these).
_S = r"([ ./\-]?)"
_NATIONAL = (
    ("pii.uk_nino", rf"[A-Z]{{2}}{_S}\d\d\1\d\d\1\d\d\1[A-D]", r"\b[A-Z]{2}~##~##~##~[A-D]\b"),
    ("pii.de_tax_id", rf"[1-9]\d{_S}\d{{3}}\1\d{{3}}\1\d{{3}}", r"\b[1-9]#~#{3}~#{3}~#{3}\b"),
    (
        "pii.fr_nir",
        rf"[12]{_S}\d\d\1\d\d\1(?:\d\d|2[AB])\1\d{{3}}\1\d{{3}}\1\d\d",
        r"\b[12]~##~##~(?:##|2[AB])~#{3}~#{3}~##\b",
    ),
    (
        "pii.it_fiscal_code",
        r"[A-Z]{6}[0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]",
        r"\b[A-Z]{6}#[0-9LMNPQRSTUV][A-Z][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]\b",  # the year's first digit
    ),
    (
        "pii.es_dni",
        r"(?:\d{8}|\d\d\.\d{3}\.\d{3}|[XYZ][ ./\-]?\d{7})[ ./\-]?[A-Z]",
        r"\b(?:#{8}|##\.#{3}\.#{3}|[XYZ]~#{7})~[A-Z]\b",
    ),
)
_NATIONAL_RE = tuple(
    (category, re.compile(rf"(?<![\w+\-./]){shape}(?![\w\-]|[.,]\d)", re.IGNORECASE))
    for category, shape, _ in _NATIONAL
)
_NATIONAL_END = _SHAPES_END + len(_NATIONAL)  # trigger index after the national identifiers' triggers
_NATIONAL_REACH = 24  # characters an identifier can hold: its match ends where its trigger's does


def _national_triggers() -> list[tuple[str, int]]:
    """ASCII digits are enough: the canonical view has turned every other script's digits into them."""
    return [(trigger.replace("#", "[0-9]").replace("~", r"[ ./\-]?"), CASELESS) for _, _, trigger in _NATIONAL]


def _national_ids(text: str, hits: list[list[tuple[int, int]]], emit: Emit) -> list[tuple[int, int]]:
    """Spans of the valid national identifiers ending where their triggers hit; the digit runs inside
    them are nothing else."""
    taken: list[tuple[int, int]] = []
    for (category, pattern), spans in zip(_NATIONAL_RE, hits):
        pos = 0
        for _, end in spans:  # in order of their ends: one search per window not already searched
            if end <= pos:
                continue
            first, last = max(pos, end - _NATIONAL_REACH), min(len(text), end + 2)
            for m in pattern.finditer(text, first, last):
                if (m.end() < last or last == len(text)) and validators.NATIONAL_IDS[category](
                    _SEPARATOR.sub("", m.group())
                ):
                    emit(category, m.start(), m.end())
                    taken.append(m.span())
            pos = end
    return sorted(taken, key=lambda span: span[1])


# --- e-mail: find "@" (a literal: fast), then the local part backwards and the domain forwards -------
_LOCAL_TAIL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}\Z")
_DOMAIN = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9\-])")


def _emails(text: str, hits: list[tuple[int, int]], emit: Emit) -> None:
    """At each "@" followed by a domain character (the trigger)."""
    for at, _ in hits:
        domain = _DOMAIN.match(text, at)
        if domain:
            local = _LOCAL_TAIL.search(text, max(0, at - 64), at)
            if local and not _in_url_authority(text, local.start()):
                emit("pii.email", local.start(), domain.end())


def _in_url_authority(text: str, start: int) -> bool:
    """ "user:pass@host" inside a URL is a credential (reported as such), not an e-mail address."""
    if not start or text[start - 1] != ":":
        return False
    word_start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
    return "://" in text[word_start:start]


# --- IPv6: a ":" literal, then the hex-and-colon run around it, checked by ipaddress ---------------
_IPV6_TRIGGER = r":[0-9A-Fa-f]{0,4}:"  # one match per starting ":"
_DIGIT = re.compile(r"\d")
_HEXCOLON = frozenset("0123456789abcdefABCDEF:.")


def _ipv6(text: str, hits: list[tuple[int, int]], emit: Emit) -> None:
    """`hits` are all the matches of `_IPV6_TRIGGER` (one per start); each is searched from the last end."""
    pos = 0
    for first, last in sorted(hits):
        if first < pos:
            continue
        start, end = first, last
        while start > 0 and text[start - 1] in _HEXCOLON and first - start < 40:
            start -= 1
        while end < len(text) and text[end] in _HEXCOLON and end - start < 46:
            end += 1
        candidate = text[start:end].strip(".")
        boundary = (start == 0 or not text[start - 1].isalnum()) and (end >= len(text) or not text[end].isalnum())
        has_digit = _DIGIT.search(candidate) is not None  # "a::b" in code is not an address
        if boundary and has_digit and validators.ipv6_ok(candidate):
            emit("pii.ip_address", start, start + len(candidate))
        pos = end


# --- secrets with a recognisable prefix: each pattern starts with a literal, its trigger -------------
_PREFIXED = (
    (
        "secret.private_key",
        "-----BEGIN ",
        re.compile(
            r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY(?: BLOCK)?-----"
            r"(?:[\s\S]{0,16384}?-----END \1PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s:,\-]*)"
        ),
    ),
    ("secret.aws_access_key", "A(?:KIA|SIA|BIA|CCA)", re.compile(r"A(?:KIA|SIA|BIA|CCA)[A-Z2-7]{16}(?![A-Za-z0-9])")),
    ("secret.google_api_key", "AIza", re.compile(r"AIza[0-9A-Za-z_\-]{35}(?![A-Za-z0-9_\-])")),
    (
        "secret.github_token",
        "gh(?:[pousr]_|ithub_pat_)",
        re.compile(r"gh(?:[pousr]_[A-Za-z0-9]{36}|ithub_pat_[A-Za-z0-9_]{60,})(?![A-Za-z0-9_])"),
    ),
    ("secret.slack_token", "xox[abposr]-", re.compile(r"xox[abposr]-[A-Za-z0-9]{1,}-[A-Za-z0-9\-]{8,}")),
    ("secret.stripe_key", "k_live_", re.compile(r"k_live_[0-9A-Za-z]{16,}")),  # "sk_"/"rk_": checked after
    ("secret.jwt", "eyJ", re.compile(r"eyJ[A-Za-z0-9_\-]{6,}\.eyJ[A-Za-z0-9_\-]{6,}(?:\.[A-Za-z0-9_\-]*)?")),
)
_URL_PASSWORD = re.compile(r"://[^\s:/@]{1,128}:([^\s/@]{1,256})@")
_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _prefixed_secret(category: str, text: str, m: re.Match[str], emit: Emit) -> None:
    start = m.start()
    if category == "secret.stripe_key":
        if start == 0 or text[start - 1] not in "sr":
            return
        start -= 1
    if start and text[start - 1] in _WORD_CHARS:
        return
    emit(category, start, m.end())


# --- phrases on the lower-cased text: one trie-triggered pass for injection, assignments and topics ---
_ASSIGNMENT_KEYS = (
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "secret_key",
    "client_secret",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "auth_token",
    "access_token",
    "token",
)
_ASSIGNMENT_VALUE = (
    r"[\"']?\s{0,3}(?::|=>?)\s{0,3}[\"']?"
    r"(?![\"'*<{$%]|x{4}|\.\.\.|none\b|null\b|true\b|false\b|redacted|changeme\b|your)"
    r"([^\s\"',;)}\]]{6,128})"
)
CONTROL_TOKEN = re.compile(r"<\|[^|<>\s]{1,64}\|>")


def _base_phrases(phrases: PhraseSet) -> PhraseSet:
    for anchor, pattern in INJECTION_PATTERNS:
        phrases.add_pattern("injection.override", anchor, pattern, before=160)
    for phrase in INJECTION_PHRASES:
        phrases.add_phrase("injection.override", phrase)
    for phrase in ROLEPLAY_PHRASES:
        phrases.add_phrase("injection.roleplay", phrase)
    for key in _ASSIGNMENT_KEYS:
        phrases.add_pattern(
            "secret.password_assignment", key, rf"(?<![\w-]){re.escape(key)}{_ASSIGNMENT_VALUE}", group=1
        )
    return phrases


def lowered(text: str) -> str:
    """`text.lower()` with the same length (U+0130 is the one code point whose lower case is longer)."""
    return (text if "\u0130" not in text else text.replace("\u0130", "i")).lower()


@cache
def _triggers() -> Triggers:
    """The text triggers, in the order `Scanner.scan` unpacks them, then one per `_PREFIXED` entry."""
    return Triggers(
        [
            *_digit_triggers(),
            *_national_triggers(),
            ("@[A-Za-z0-9]", SOM),
            (_IPV6_TRIGGER, SOM),
            (r"<\|", SOM),
            ("://", SOM),
            *((literal, SOM) for _, literal, _ in _PREFIXED),
        ]
    )


def finditer_at(pattern: re.Pattern[str], text: str, hits: list[tuple[int, int]]) -> Iterator[re.Match[str]]:
    """`pattern.finditer(text)` for a pattern whose every match starts at the start of one of `hits`."""
    pos = 0
    for start, _ in sorted(hits):
        if start >= pos and (m := pattern.match(text, start)):
            pos = m.end()
            yield m


class Scanner:
    """All detectors plus the pack's topics, compiled once; `scan` is safe to call from many threads."""

    def __init__(self, topics: dict[str, tuple[list[str], list[str]]] | None = None) -> None:
        self._phrases = _base_phrases(PhraseSet())
        self._patterns: list[tuple[str, re.Pattern[str]]] = []
        for name, (phrases, patterns) in (topics or {}).items():
            for phrase in phrases:
                self._phrases.add_phrase(f"topic.{name}", phrase)
            self._patterns.extend((f"topic.{name}", re.compile(pattern)) for pattern in patterns)
        self._phrases.compile()
        self._triggers = _triggers()
        warm()  # the canonical view's tables, once per process: not on the first non-ASCII request

    def scan(self, text: str) -> list[Finding]:
        """Every finding in `text`, ordered by start, spans in `text`; overlapping findings are all kept.

        Detectors run on the canonical view (canon.py); a finding whose original span holds dropped
        invisible characters is also reported as hidden text, as is each run that hides text by itself.
        """
        view = canonical(text)
        found = self._scan(view.text)
        if view.identity:
            return found
        mapped = [Finding(f.category, view.start(f.start), view.end(f.end)) for f in found]
        hidden = {(start, end) for start, end in view.hidden_spans}
        hidden.update((f.start, f.end) for f in mapped if view.hides(f.start, f.end))
        mapped.extend(Finding(HIDDEN, start, end) for start, end in hidden)
        mapped.sort(key=lambda f: (f.start, -f.end))
        return mapped

    def _scan(self, text: str) -> list[Finding]:
        found: list[Finding] = []

        def emit(category: str, start: int, end: int) -> None:
            found.append(Finding(category, start, end))

        hits = self._triggers.scan(text)
        digit_run, digit_letter, shapes = hits[0], hits[1], hits[2:_SHAPES_END]
        at, colons, control, url, *prefixed = hits[_NATIONAL_END:]
        if digit_run or digit_letter:
            taken = _national_ids(text, hits[_SHAPES_END:_NATIONAL_END], emit)
            _numbers(text, digit_run + digit_letter, shapes, emit, taken)
        _emails(text, at, emit)
        _ipv6(text, colons, emit)
        for (category, _, pattern), spans in zip(_PREFIXED, prefixed):
            for m in finditer_at(pattern, text, spans):
                _prefixed_secret(category, text, m, emit)
        for m in finditer_at(_URL_PASSWORD, text, url):
            emit("secret.url_password", m.start(1), m.end(1))
        for m in finditer_at(CONTROL_TOKEN, text, control):
            emit("injection.control_token", m.start(), m.end())
        for category, start, end in self._phrases.finditer(lowered(text)):
            emit(category, start, end)
        for category, pattern in self._patterns:
            for m in pattern.finditer(text):
                emit(category, m.start(), m.end())
        found.sort(key=lambda f: (f.start, -f.end))
        return found
