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
        # As people in other countries write them (issue 32).
        ("appelez le 02 72 96 45 13 s'il vous plaît", ("phone",)),
        ("Handy: 0498093227", ("phone",)),
        ("ring 0131 4960551 after six", ("phone",)),
        ("call 8323173008 tonight", ("phone",)),
        ("783-339-6947x751 is my desk", ("phone",)),
        ("我的手机是13812345678", ("phone",)),
        ("my mobile 98765 43210", ("phone",)),
        ("Tel. 0049 30 12345678", ("phone",)),
        ("call 555-123-4567 in the afternoon", ("phone",)),
        ("カード４１２４ ０００３ ４８５５ ９０９０です", ("card",)),
        ("card 4111\u00a01111\u00a01111\u00a01111", ("card",)),
        ("maestro 5018 0000 0009", ("card",)),
        ("iban fr6675415115055203519230310 please", ("iban",)),
        ("gb77 sfwv 3022 5841 9720 76", ("iban",)),
        ("IBAN DE89\u200b3704 0044 0532 0130 00", ("iban",)),
        ("schreiben Sie an jörg@müller-bau.de", ("email",)),
        ("info(at)firma.de", ("email",)),
        ("用户＠例子.中国", ("email",)),
        ("tel ٠٦١٢٣٤٥٦٧٨", ("phone",)),
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
        "Order #48213977 shipped on 2024-03-15 at 14:30.",
        "Your order number is 2945614990.",
        "Invoice INV-2024-004512, total 1 299,00 EUR.",
        "Serial number SN-6382-3308-4653 is faulty.",
        "S/N 678610718093 passed the test.",
        "Logged at 2027-12-14T20:52:30Z by the daemon.",
        "Opening hours 10:00-17:30, 26.09.-01.02.2017.",
        "Server at 10.24.8.254 port 8443.",
        "Lottery numbers 13 35 36 15 26 33.",
        "The file is 238 514 626 bytes.",
        "Pressure 1013.25 hPa, meter reading 004512.7 kWh.",
        "ISBN 978-3-16-148410-0 is out of print.",
        "Unix time 1700000000 in the log.",
        "uuid fa01208bc5c328968ccc6ff223ec7597 belongs to the job",
    ],
)
def test_leaves_alone(text: str) -> None:
    assert detect_pii(text) == ()


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB00WEST12345698765432")
