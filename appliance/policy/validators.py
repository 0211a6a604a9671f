"""Checksums and number-plan rules that turn a digit pattern into a precise finding.

A regex alone flags order numbers and timestamps; these checks are why a match is reported at all.
"""

from __future__ import annotations

import ipaddress

_CARD_PREFIXES = (("4",), ("51", "52", "53", "54", "55"), tuple(str(n) for n in range(2221, 2721)),
                  ("34", "37"), ("6011", "65", "644", "645", "646", "647", "648", "649"),
                  ("35",), ("300", "301", "302", "303", "304", "305", "36", "38", "39"), ("62",))
_ALL_CARD_PREFIXES = tuple(p for group in _CARD_PREFIXES for p in group)

# Account-number length of each IBAN country (ISO 13616 registry, the commonly used subset and more).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27,
    "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24,
    "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def digits_of(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_ok(digits: str) -> bool:
    """13-19 digits, a known issuer prefix and the Luhn check digit."""
    return 13 <= len(digits) <= 19 and digits.startswith(_ALL_CARD_PREFIXES) and luhn_ok(digits)


def iban_ok(compact: str) -> bool:
    """Country length and the ISO 7064 mod-97 check over the rearranged account number."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    """SSA rules: no area 000, 666 or 900-999, no group 00, no serial 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def nanp_ok(area: str, exchange: str) -> bool:
    """North American numbers: area code and exchange start with 2-9."""
    return area[0] not in "01" and exchange[0] not in "01"


def ipv6_ok(text: str) -> bool:
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return not address.is_unspecified and not address.is_loopback
