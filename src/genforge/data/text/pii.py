"""PII scrubbing: e-mail addresses, phone numbers, IPv4/IPv6 addresses and payment card numbers
are replaced by tokens (`<EMAIL>`, `<PHONE>`, `<IP>`, `<CARD>` by default), counted per kind.

The patterns lean towards precision: prose is full of numbers (years, "Act 3, Scene 2",
"John 3:16", "10:30", "v1.2.3", prices, ISBNs) that must survive. So a phone number needs a
phone's shape (a leading "+" and country code, or the (NNN) NNN-NNNN family with separators),
a card number needs 13-19 digits, a card-brand first digit (2-6) and a valid Luhn check digit,
an IPv6 candidate must parse as one (`ipaddress`) and an IPv4 one needs four octets of 0-255 not
inside a longer dotted run. Kinds are scrubbed in an order where the earlier can contain what a
later one matches (an e-mail's digits, a card's digit groups), and no replacement has digits.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from genforge.data.text.config import DEFAULT_REPLACEMENTS, PII_KINDS

EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# 13-19 digits in groups separated by single spaces or dashes
CARD = re.compile(r"(?<![\d-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\d-])")
# an IPv6 candidate: hex groups and colons (an embedded IPv4 tail allowed); `ipaddress` decides
IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])"
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
PHONE = re.compile(
    r"(?<![\w+])(?:"
    # international: +CC then 2-6 groups of digits (some in parentheses); 7-15 digits in all, checked after
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}"
    r"|"
    # North-American style: (NNN) NNN-NNNN, NNN-NNN-NNNN, NNN.NNN.NNNN, NNN NNN NNNN
    r"(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r")(?![\w])"
)


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _is_card(match: str) -> bool:
    digits = _digits(match)
    if not 13 <= len(digits) <= 19:
        return False
    seps = {c for c in match if not c.isdigit()}
    return len(seps) <= 1 and luhn_ok(
        digits
    )  # one kind of separator: "4111-1111 1111 1111" is not a card's print


def _is_ipv6(match: str) -> bool:
    groups = [g for g in match.split(":") if g]
    if len(groups) < 2 or not any(c.isdigit() for c in match):
        return False  # "a:b:" or "be::ef" in prose are not addresses worth a token
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


def _is_phone(match: str) -> bool:
    return 7 <= len(_digits(match)) <= 15


def _always(_match: str) -> bool:
    return True


@dataclass(frozen=True)
class Pattern:
    kind: str
    regex: re.Pattern[str]
    check: Callable[[str], bool]


# order matters: earlier kinds may contain text a later pattern would match
PATTERNS = (
    Pattern("email", EMAIL, _always),
    Pattern("card", CARD, _is_card),
    Pattern("ip", IPV6, _is_ipv6),
    Pattern("ip", IPV4, _always),
    Pattern("phone", PHONE, _is_phone),
)
assert {p.kind for p in PATTERNS} == set(PII_KINDS)


@dataclass
class Scrubbed:
    text: str
    counts: dict[str, int] = field(default_factory=dict)
    found: list[tuple[str, str]] = field(default_factory=list)  # (kind, original text), for tests and audits


def scrub(text: str, replacements: dict[str, str] | None = None, keep_found: bool = False) -> Scrubbed:
    """`text` with every PII match replaced by its kind's token, and the counts per kind."""
    tokens = {**DEFAULT_REPLACEMENTS, **(replacements or {})}
    counts = dict.fromkeys(PII_KINDS, 0)
    found: list[tuple[str, str]] = []
    for pattern in PATTERNS:
        if pattern.kind == "email" and "@" not in text:
            continue  # the cheap test first: most documents have no e-mail address

        def replace(m: re.Match[str], p: Pattern = pattern) -> str:
            if not p.check(m.group(0)):
                return m.group(0)
            counts[p.kind] += 1
            if keep_found:
                found.append((p.kind, m.group(0)))
            return tokens[p.kind]

        text = pattern.regex.sub(replace, text)
    return Scrubbed(text, counts, found)
