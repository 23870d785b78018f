"""PII scrubbing: true positives of every kind, false positives prose is full of, Luhn, config."""

from __future__ import annotations

import pytest

from genforge.core.config import from_dict
from genforge.core.errors import ConfigError
from genforge.data.text.config import TextIngestConfig
from genforge.data.text.pii import luhn_ok, scrub

TRUE = [
    ("write to jane.doe+news@example.co.uk today", "email", "jane.doe+news@example.co.uk"),
    ("mail BOB_99@sub.mail-server.org.", "email", "BOB_99@sub.mail-server.org"),
    ("call (555) 123-4567 now", "phone", "(555) 123-4567"),
    ("call 555-123-4567 now", "phone", "555-123-4567"),
    ("call 555.123.4567 now", "phone", "555.123.4567"),
    ("ring +44 20 7946 0958 please", "phone", "+44 20 7946 0958"),
    ("ring +1-202-555-0143.", "phone", "+1-202-555-0143"),
    ("ring +33 (0)1 23 45 67 89", "phone", "+33 (0)1 23 45 67 89"),
    ("server 192.168.0.1 is down", "ip", "192.168.0.1"),
    ("dns 8.8.8.8, mask 255.255.255.0", "ip", "8.8.8.8"),
    ("v6 2001:db8:85a3::8a2e:370:7334 here", "ip", "2001:db8:85a3::8a2e:370:7334"),
    ("loopback ::1 and fe80::1ff:fe23:4567:890a ok", "ip", "fe80::1ff:fe23:4567:890a"),
    ("full 2001:0db8:0000:0000:0000:ff00:0042:8329 ok", "ip", "2001:0db8:0000:0000:0000:ff00:0042:8329"),
    ("visa 4111 1111 1111 1111 exp", "card", "4111 1111 1111 1111"),
    ("mc 5555-5555-5555-4444 exp", "card", "5555-5555-5555-4444"),
    ("amex 378282246310005 exp", "card", "378282246310005"),
    ("discover 6011111111111117.", "card", "6011111111111117"),
]

FALSE = [
    "ACT 3, SCENE 2. In 1592 the plague closed the theatres.",
    "John 3:16 and Psalm 23:1-6 were read at 10:30:45 on 2024-01-15.",
    "Version v1.2.3 and 1.2.3 and 3.14159 and 256.1.1.1 and 1.2.3.4.5.",
    "ISBN 978-0-306-40615-7 costs $12.99; call me in 5 minutes.",
    "Order 4111 1111 1111 1112 fails Luhn, as does 1234567812345678.",
    "The years 1066-1087 and 1603-1625; room 101; lines 12-15.",
    "a::b, std::vector, foo::bar::baz, dead:beef, 12:34, 1:2:3",
    "user@localhost has no domain; @handle is not mail; a@b.c too short a TLD",
    "Roman IV.ii.3 and 2.1.1 and phone-less 12345 and 555-1234 (seven digits stay).",
]


@pytest.mark.parametrize("text, kind, found", TRUE)
def test_true_positives(text: str, kind: str, found: str) -> None:
    out = scrub(text, keep_found=True)
    assert (kind, found) in out.found, out.found
    assert found not in out.text
    assert out.counts[kind] >= 1


@pytest.mark.parametrize("text", FALSE)
def test_false_positives_left_alone(text: str) -> None:
    out = scrub(text, keep_found=True)
    assert out.found == [] and out.text == text
    assert sum(out.counts.values()) == 0


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713") and luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112") and not luhn_ok("79927398710")


def test_counts_and_configurable_replacements() -> None:
    text = "a@b.io, c@d.io; 10.0.0.1; 4111-1111-1111-1111; +1 202 555 0143"
    out = scrub(text, {"email": "[mail]", "card": "[cc]"})
    assert out.counts == {"email": 2, "phone": 1, "ip": 1, "card": 1}
    assert out.text == "[mail], [mail]; <IP>; [cc]; <PHONE>"


def test_card_inside_email_or_ip_counts_once() -> None:
    out = scrub("4111111111111111@example.com", keep_found=True)
    assert [k for k, _ in out.found] == ["email"]


def test_replacement_config_validation() -> None:
    with pytest.raises(ConfigError, match="unknown kind"):
        from_dict(TextIngestConfig, {"pii_replacements": {"ssn": "<SSN>"}})
    with pytest.raises(ConfigError, match="without digits"):
        from_dict(TextIngestConfig, {"pii_replacements": {"card": "<CARD1>"}})
    cfg = from_dict(TextIngestConfig, {"pii_replacements": {"email": "<E>"}})
    assert cfg.pii_replacements["email"] == "<E>" and cfg.pii_replacements["ip"] == "<IP>"
