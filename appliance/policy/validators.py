"""Checks that turn a candidate into a finding: well-kept libraries wherever they know the rules.

A regex alone flags order numbers and timestamps; these checks are why a match is reported at all.
`phonenumbers` (Google's libphonenumber metadata) decides phone numbers across regions and formats,
`python-stdnum` decides checksummed identifiers. What no library covers stays here: card issuer
prefixes (stdnum has the Luhn check, not the issuers), the UK National Insurance number (not in
stdnum), and IPv6 through `ipaddress`.

Each check is cached by its candidate text: libphonenumber's parse costs tens of microseconds, and the
same numbers, dates and references recur across requests, streamed windows and retried prompts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache

import phonenumbers
from stdnum import iban, luhn
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.us import ssn

# (issuer prefixes, card lengths): Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro
_CARDS = (
    (("4",), (13, 16, 19)),
    (("51", "52", "53", "54", "55", *map(str, range(2221, 2721))), (16,)),
    (("34", "37"), (15,)),
    (("6011", "65", *map(str, range(644, 650))), (16, 17, 18, 19)),
    (("35",), (16, 17, 18, 19)),
    (("1800", "2131"), (15,)),
    (("300", "301", "302", "303", "304", "305", "36", "38", "39"), (14, 16)),
    (("62",), (16, 17, 18, 19)),
    (("50", "56", "57", "58", "6304", "6759", "6761", "6762", "6763", "6390", "0604"), tuple(range(12, 20))),
)
_CARD_LENGTHS = {prefix: lengths for prefixes, lengths in _CARDS for prefix in prefixes}
_CARD_PREFIX_SIZES = sorted({len(p) for p in _CARD_LENGTHS}, reverse=True)
_CACHED = lru_cache(maxsize=1 << 16)  # candidates per check kept: a few MB at most

# Account-number length of each IBAN country (ISO 13616 registry): where an unspaced IBAN ends.
IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BR": 29,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NL": 18,
    "NO": 15,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "SA": 24,
    "SC": 31,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
}


_NOT_DIGIT = re.compile(r"\D")


def digits_of(text: str) -> str:
    return _NOT_DIGIT.sub("", text)


@_CACHED
def card_ok(digits: str) -> bool:
    """A known issuer prefix, a length that issuer uses and the Luhn check digit (stdnum)."""
    for size in _CARD_PREFIX_SIZES:
        lengths = _CARD_LENGTHS.get(digits[:size])
        if lengths is not None:
            return len(digits) in lengths and luhn.is_valid(digits)
    return False


@_CACHED
def iban_ok(compact: str) -> bool:
    """Country length and format and the ISO 7064 mod-97 check (stdnum); national account checksums are
    not required: mod-97 already catches a mistyped IBAN, and generated test IBANs rarely pass them."""
    return iban.is_valid(compact, check_country=False)


@_CACHED
def ssn_ok(compact: str) -> bool:
    """SSA rules (no area 000, 666 or 9xx, no group 00, no serial 0000) and the numbers known to be
    published examples (stdnum)."""
    return ssn.is_valid(compact)


_NINO = re.compile(r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]")


@_CACHED
def nino_ok(compact: str) -> bool:
    """HMRC's allocation rules for a National Insurance number: D, F, I, Q, U, V never used, O not
    second, seven prefixes (and the temporary ZZ) not allocated, suffix A-D."""
    return _NINO.fullmatch(compact.upper()) is not None


NATIONAL_IDS: dict[str, Callable[[str], bool]] = {
    "pii.uk_nino": nino_ok,
    "pii.de_tax_id": _CACHED(idnr.is_valid),
    "pii.fr_nir": _CACHED(nir.is_valid),
    "pii.it_fiscal_code": _CACHED(codicefiscale.is_valid),
    "pii.es_dni": _CACHED(lambda v: dni.is_valid(v) or nie.is_valid(v)),
}

# Regions tried for a number written nationally: with a trunk "0" (most of Europe), and without one
# (North America, Italian mobiles, Spain); the first whose plan takes the number decides.
_TRUNK_REGIONS = ("GB", "DE", "FR", "IT", "NL", "BE", "AT", "CH")
_PLAIN_REGIONS = (("US", False), ("IT", True), ("ES", True))
_PLAIN_SHAPES: dict[str, Callable[[str], bool]] = {
    "US": lambda d: len(d) == 10 or (len(d) == 11 and d[0] == "1"),
    "IT": lambda d: d[0] == "3" and 9 <= len(d) <= 11,
    "ES": lambda d: len(d) == 9 and d[0] in "6789",
}


@_CACHED
def phone_ok(number: str) -> bool:
    """A phone number by libphonenumber's plan for the region its prefix implies (extension not included).

    "+" and international access prefixes (00, 001, and North America's 011 where no European trunk
    number reads it) name the country, so a possible length there is enough; national numbers need 8
    digits or more (9 to 11 when written without separators)
    and must be valid for one of the regions (or, written with separators and a trunk "0", possible in
    the UK, Germany or France: their fictional and newly opened ranges are not all "valid")
    tried (North America: a possible ten-digit number, since its area codes are too many to list).
    """
    head = number.lstrip("(")
    try:
        if head.startswith("+"):
            return phonenumbers.is_possible_number(phonenumbers.parse(number, None))
        if head.startswith("00"):
            return phonenumbers.is_possible_number(phonenumbers.parse(number, "DE"))
        digits = len(digits_of(number))
        if digits < 8 or (number.isdigit() and not 9 <= digits <= 11):  # bare: no EAN-8, no 12-digit reference
            return False
        if head.startswith("0"):
            parsed = [phonenumbers.parse(number, r) for r in _TRUNK_REGIONS]
            return (
                any(map(phonenumbers.is_valid_number, parsed))
                or (not number.isdigit() and any(map(phonenumbers.is_possible_number, parsed[:3])))
                or (head.startswith("011") and phonenumbers.is_possible_number(phonenumbers.parse(number, "US")))
            )
        bare = digits_of(number)
        for region, valid in _PLAIN_REGIONS:
            if not _PLAIN_SHAPES[region](bare):
                continue  # cannot be that region's number: spare the parse
            plain = phonenumbers.parse(number, region)
            if (
                phonenumbers.is_valid_number(plain)
                if valid
                else (phonenumbers.is_possible_number(plain) and len(str(plain.national_number)) == 10)
            ):
                return True
    except phonenumbers.NumberParseException:
        return False
    return False


def ipv6_ok(text: str) -> bool:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return not address.is_unspecified and not address.is_loopback
