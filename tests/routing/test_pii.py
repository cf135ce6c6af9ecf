"""Private-data detection: what it must catch and what it must leave alone."""

from __future__ import annotations

import pytest

from gateway.routing.pii import detect_pii, iban_ok, luhn_ok


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("write to jane.doe+x@corp.example.com today", ("email",)),
        ("my card is 4111 1111 1111 1111", ("card",)),
        ("card 4111-1111-1111-1111 exp 12/29", ("card",)),
        ("IBAN DE89 3704 0044 0532 0130 00 please", ("iban",)),
        ("call me at +44 20 7946 0958", ("phone",)),
        ("call (555) 123-4567 tomorrow", ("phone",)),
        ("mail a@b.io and pay GB82WEST12345698765432", ("email", "iban")),
    ],
)
def test_detects(text: str, kinds: tuple[str, ...]) -> None:
    assert detect_pii(text) == kinds


@pytest.mark.parametrize(
    "text",
    [
        "Say hello in French.",
        "The year 2024 had 366 days and 8784 hours.",
        "order 4111 1111 1111 1112 is not a valid card",  # fails Luhn
        "DE00 1234 5678 9012 3456 78 is not a valid IBAN",  # fails mod-97
        "compute 12345 * 67890",
        "version 1.2.3 at @mention",
    ],
)
def test_leaves_alone(text: str) -> None:
    assert detect_pii(text) == ()


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB00WEST12345698765432")
