"""What the words right before a number call it: a phone number ("call", "Tel.", "電話"),
something else ("order", "invoice", "S/N", "Rechnung"), or nothing. Read in a short window
before the number, and only up to a digit or the end of a sentence."""

from __future__ import annotations

import re

NEAR = 40  # characters before a number that are read

# Words that say a number is something other than a phone number, read before it.
_LABEL = re.compile(
    r"(?:\b(?:order|orders|invoice|inv|ref|reference|lot|batch|serial|s/n|sn|part|p/n|pn|sku|"
    r"model|version|ver|build|release|ticket|case|po|tracking|shipment|parcel|id|isbn|issn|"
    r"ean|upc|gtin|imei|vin|account|acct|customer|member|patient|policy|claim|contract|"
    r"booking|reservation|confirmation|transaction|receipt|item|article|art|product|code|"
    r"zip|postcode|postal|commande|facture|référence|lote|pedido|factura|ordine|fattura|"
    r"bestellung|bestellnummer|rechnung|rechnungsnummer|auftrag|artikel|seriennummer|"
    r"bestelling|factuur|zamówienie|faktura|objednávka|sipariş|fatura|nota|timestamp|"
    r"unix|epoch|size|bytes|total|population|count|amount|price|room|flight|gate|page|"
    r"port|pid|uid|gid|hash|checksum|sha|md5|uuid)\b|#|№|注文番号|订单号?)",
    re.IGNORECASE,
)
# Words near a number that say it is a phone number, in the languages of the regions.
_PHONE_WORD = re.compile(
    r"(?:\b(?:phone|phones|tel|tél|telephone|téléphone|telefon|telefone|telefono|teléfono|"
    r"telefoon|mobile|mobil|móvil|movil|cell|cellphone|cellulare|celular|portable|handy|gsm|"
    r"call|calls|dial|appel|appelez|appeler|anrufen|ruf|rufen|llama|llámame|llamar|chiama|"
    r"chiamare|bel|ligue|ligar|zadzwoń|dzwoń|zavolej|ara|arayın|numara|whatsapp|signal|"
    r"viber|sms|text|fax|contact|kontakt|contacto|contatto|reach|hotline|helpline|landline|"
    r"rufnummer|tlf|puh|puhelin)\b"
    r"|电话|手机|联系|電話|携帯|連絡|फ़ोन|फोन|मोबाइल|телефон)",
    re.IGNORECASE,
)
# "Number" says phone only when nothing else names the number ("order number" does not).
_NUMBER_WORD = re.compile(
    r"\b(?:number|numéro|nummer|número|numero|numer|číslo|nr|no)\b|番号|号码", re.IGNORECASE
)
# Between a word and the number it names: no digit and no end of a sentence (`Tel.` and
# `Nr.` are abbreviations, not ends), and not another string of the request (joined by NUL).
_BREAK = re.compile(r"[\d;!?。；！？\n\x00]|\.\s+[A-Z][a-z]{2,}")


def named(before: str) -> str | None:
    """What the words right before a number call it: "phone", "other" (an order, a serial,
    an invoice...), or None. A phone word nearer than a label wins; "number" counts as a
    phone word only when no label names the number."""
    label = _last_end(_LABEL, before)
    word = _last_end(_PHONE_WORD, before)
    if label is not None and (word is None or label > word):
        return "other"
    if word is not None or _last_end(_NUMBER_WORD, before) is not None:
        return "phone"
    return None


def _last_end(pattern: re.Pattern[str], before: str) -> int | None:
    end = None
    for m in pattern.finditer(before):
        end = m.end()
    if end is None or _BREAK.search(before, end):
        return None  # a digit or a sentence break between the word and the number
    return end
