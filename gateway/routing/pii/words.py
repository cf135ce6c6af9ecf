"""What the words right before a number call it: a phone number ("call", "Tel.", "電話"),
something else ("order", "invoice", "S/N", "Rechnung"), or nothing. Read in a short window
before the number, and only back to a digit or the end of a sentence.

Words are looked up in sets, nearest first: this runs for every ambiguous number of a
request, so it is a split and a few set look-ups, not a large alternation tried at every
position.
"""

from __future__ import annotations

import re

NEAR = 40  # characters before a number that are read

# Words that say a number is something other than a phone number.
_LABELS = frozenset(
    """
    order orders invoice inv ref reference lot batch serial s/n sn part p/n pn sku model
    version ver build release ticket case po tracking shipment parcel id isbn issn ean upc
    gtin imei vin account acct customer member patient policy claim contract booking
    reservation confirmation transaction receipt item article art product code zip postcode
    postal commande facture référence lote pedido factura ordine fattura bestellung
    bestellnummer rechnung rechnungsnummer auftrag artikel seriennummer bestelling factuur
    zamówienie faktura objednávka sipariş fatura nota timestamp unix epoch size bytes total
    population count amount price room flight gate page port pid uid gid hash checksum sha
    md5 uuid sizes values scores lots parts rooms pages tickets invoices versions items
    numbers # №
    """.split()
)
# Words that say it is a phone number, in the languages of the regions.
_PHONE_WORDS = frozenset(
    """
    phone phones tel tél telephone téléphone telefon telefone telefono teléfono telefoon
    mobile mobil móvil movil cell cellphone cellulare celular portable handy gsm call calls
    dial appel appelez appeler anrufen ruf rufen llama llámame llamar chiama chiamare bel
    ligue ligar zadzwoń dzwoń zavolej ara arayın numara whatsapp signal viber sms text fax
    contact kontakt contacto contatto reach hotline helpline landline rufnummer tlf puh
    puhelin फ़ोन फोन मोबाइल телефон телефона
    """.split()
)
# "Number" says phone only when nothing else names the number ("order number" does not).
_NUMBER_WORDS = frozenset("number numéro nummer número numero numer číslo nr no".split())
# Scripts written without spaces: words found inside a run of letters.
_CJK_LABELS = ("注文番号", "订单", "訂單", "注文")
_CJK_PHONE = ("电话", "手机", "联系", "電話", "携帯", "連絡", "聯絡")
_CJK_NUMBER = ("番号", "号码", "號碼")

_WORD = re.compile(r"[^\W\d_]+(?:/[^\W\d_]+)?|[#№]")
# Where a phrase ends: a digit, the end of a sentence (`Tel.` and `Nr.` are abbreviations,
# not ends), or another string of the request (the scan joins them with NUL).
_BREAK = re.compile(r"[\d;!?。；！？\n\x00]|\.\s+[A-Z][a-z]{2,}")


def named(before: str) -> str | None:
    """What the words right before a number call it: "phone", "other" (an order, a serial,
    an invoice...), or None. The nearest label or phone word wins; "number" counts as a
    phone word only when no label names the number."""
    start = 0
    for m in _BREAK.finditer(before):
        start = m.end()
    number = False
    for word in reversed(_WORD.findall(before, start)):
        w = word.lower()
        if w in _LABELS:
            return "other"
        if w in _PHONE_WORDS:
            return "phone"
        if w in _NUMBER_WORDS:
            number = True
        elif not w.isascii():
            if any(x in w for x in _CJK_LABELS):
                return "other"
            if any(x in w for x in _CJK_PHONE):
                return "phone"
            number = number or any(x in w for x in _CJK_NUMBER)
    return "phone" if number else None
