"""Private data as people in many countries write it, and numbers that only look like it.

Private data comes from Faker (not a list written by hand): phone numbers, e-mail addresses,
card numbers and IBANs as its providers write them for each locale, then respelled the way
people type or paste them: fullwidth digits and `＠` (a Japanese or Chinese input method),
Arabic-Indic, Persian and Devanagari digits, no-break, thin and zero-width spaces (copied
from a web page), lower-case and grouped IBANs, cards in groups of four, `00` for `+`,
extensions. Each goes into a sentence of one of several
languages, some of which write numbers right against the words around them.

Look-alikes are generated too, from templates with random parts: order and invoice numbers,
dates and times in many spellings, versions, serials, lot numbers, measurements, amounts,
readings, IP addresses, ISBNs, coordinates, timestamps. None is private data.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from faker import Faker

# Not one locale per issue example: these are the regions of the probe and as many
# again that it did not name, from every continent.
LOCALES = (
    "en_US", "en_GB", "fr_FR", "de_DE", "es_ES", "it_IT", "nl_NL", "pt_BR", "pl_PL",
    "sv_SE", "ja_JP", "zh_CN", "en_IN", "de_CH", "nl_BE", "da_DK", "cs_CZ", "tr_TR",
    "en_CA", "en_AU", "fr_CA", "es_MX", "pt_PT", "de_AT", "fi_FI", "no_NO", "ro_RO",
    "hu_HU", "el_GR", "sk_SK", "hr_HR", "uk_UA", "ru_RU", "ko_KR", "zh_TW", "th_TH",
    "vi_VN", "id_ID", "hi_IN", "he_IL", "ar_SA", "fa_IR", "en_NZ", "en_IE", "es_AR",
    "es_CL", "es_CO", "bn_BD", "bg_BG", "lt_LT", "lv_LV", "et_EE", "sl_SI",
)  # fmt: skip

_FULLWIDTH = str.maketrans("0123456789@+-() ", "０１２３４５６７８９＠＋－（）\u3000")
# Digits of the scripts people type phone numbers in: Arabic-Indic, Persian, Devanagari.
_SCRIPTS = [
    str.maketrans("0123456789", "".join(chr(base + i) for i in range(10)))
    for base in (0x660, 0x6F0, 0x966)
]
_SENTENCES = (
    "Please call me back on {}.",
    "My {kind} is {} if you need it.",
    "You can reach me at {} any time.",
    "Here it is: {}",
    "{} (that's mine, keep it safe)",
    "Mon {kind} : {}, merci.",
    "Meine Angabe lautet {} – danke.",
    "Mi dato es {}, gracias.",
    "Il mio riferimento è {}.",
    "请记下{}，谢谢。",
    "連絡先は{}です。",
    "Mój numer to {} dziękuję",
)


@dataclass(frozen=True)
class Sample:
    kind: str  # email | phone | card | iban
    locale: str
    value: str  # as Faker wrote it
    spelled: str  # as it is in `text`
    text: str


def _respell(kind: str, value: str, rng: random.Random) -> str:
    c = rng.random()
    if kind == "card":
        groups = [value[i : i + 4] for i in range(0, len(value), 4)]
        sep = rng.choice([" ", "-", "\u00a0", "\u202f", " "])
        out = value if c < 0.2 else sep.join(groups)
        if rng.random() < 0.1:
            out = "\u200b".join(groups)  # pasted with zero-width spaces
        return out.translate(_FULLWIDTH) if rng.random() < 0.25 else out
    if kind == "iban":
        grouped = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        out = rng.choice(
            [value, grouped, grouped.replace(" ", "\u00a0"), grouped.replace(" ", "\u200b")]
        )
        return out.lower() if rng.random() < 0.5 else out
    if kind == "phone":
        if c < 0.45:
            return value
        if c < 0.6:
            return value.replace(" ", "\u00a0")
        if c < 0.7:
            return value.replace(" ", "\u202f")
        if c < 0.8:
            return value.translate(_FULLWIDTH)
        if c < 0.85:
            return value.translate(rng.choice(_SCRIPTS))
        if value.startswith("+"):
            return "00" + value[1:]
        return value + rng.choice([" ext. 12", " x204", ""])
    if kind == "email":
        return value.replace("@", "＠") if c < 0.2 else value
    return value


def all_locales() -> list[str]:
    """Every Faker locale whose providers write all four kinds (about 100)."""
    import warnings

    from faker.config import AVAILABLE_LOCALES

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated locales say so
        for locale in AVAILABLE_LOCALES:
            fake = Faker(locale)
            try:
                fake.phone_number(), fake.email(), fake.credit_card_number(), fake.iban()
            except AttributeError:
                continue
            out.append(locale)
    return out


def private_samples(
    *, per_kind: int = 4, seed: int = 1, locales: tuple[str, ...] | list[str] = LOCALES
) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for locale in locales:
        fake = Faker(locale)
        fake.seed_instance(seed)
        makers = {
            "phone": fake.phone_number,
            "email": fake.email,
            "card": fake.credit_card_number,
            "iban": fake.iban,
        }
        for kind, make in makers.items():
            for _ in range(per_kind):
                value = make()
                spelled = _respell(kind, value, rng)
                text = rng.choice(_SENTENCES).replace("{kind}", kind).format(spelled)
                out.append(Sample(kind, locale, value, spelled, text))
    # Non-ASCII addresses, as the probe sent them and as Faker's locales do not.
    for address in (
        "jörg@müller-bau.de",
        "józef@przykład.pl",
        "用户@例子.中国",
        "info(at)firma.de",
    ):
        out.append(Sample("email", "idn", address, address, f"Schreiben Sie an {address} bitte."))
    return out


def _date(rng: random.Random) -> dt.datetime:
    return dt.datetime(2000, 1, 1) + dt.timedelta(seconds=rng.randrange(0, 30 * 365 * 86400))


def look_alikes(*, count: int = 240, seed: int = 1) -> list[str]:
    """Sentences with numbers that are not private data, from templates with random parts."""
    rng = random.Random(seed)
    r = rng.randint

    def d() -> dt.datetime:
        return _date(rng)

    makers = [
        lambda: f"Order #{r(10_000, 99_999_999)} has shipped.",
        lambda: f"Your order number is {r(10**9, 10**10 - 1)}.",
        lambda: f"Invoice INV-{d():%Y}-{r(1, 999_999):06d} is due.",
        lambda: f"Purchase order PO {r(4_500_000_000, 4_599_999_999)} was approved.",
        lambda: f"Bestellnummer {r(10**7, 10**9)} wurde versandt.",
        lambda: f"The meeting is on {d():%Y-%m-%d} at {d():%H:%M}.",
        lambda: f"Réunion le {d():%d/%m/%Y} à {d():%H:%M}.",
        lambda: f"Termin am {d():%d.%m.%Y} um {d():%H:%M} Uhr.",
        lambda: f"Deadline {d():%m/%d/%Y}, report {d():%Y%m%d}.",
        lambda: f"Logged at {d():%Y-%m-%dT%H:%M:%S}Z by the daemon.",
        lambda: f"It started {d():%d %B %Y} and ran {r(2, 59)} minutes.",
        lambda: f"Upgrade to version {r(1, 20)}.{r(0, 30)}.{r(0, 200)} first.",
        lambda: f"Windows build 10.0.{r(10000, 22999)}.{r(100, 4000)} is installed.",
        lambda: f"Serial number SN-{r(1000, 9999)}-{r(1000, 9999)}-{r(1000, 9999)} is faulty.",
        lambda: f"S/N {r(10**9, 10**12)} passed the test.",
        lambda: f"Lot {d():%Y}-{r(1, 9999):04d} was recalled.",
        lambda: f"Batch {r(100_000, 9_999_999)} expires {d():%m/%Y}.",
        lambda: f"The part weighs {r(1, 999)}.{r(0, 99)} kg and is {r(10, 3000)} mm long.",
        lambda: f"Pressure {r(950, 1050)}.{r(0, 99)} hPa, temperature {r(-20, 40)}.{r(0, 9)} °C.",
        lambda: f"The motor runs at {r(1, 9)} {r(100, 999)} rpm on {r(110, 400)} V.",
        lambda: f"Meter reading {r(0, 99_999):06d}.{r(0, 9)} kWh on {d():%d.%m.%Y}.",
        lambda: f"Total {r(1, 99)} {r(100, 999)},{r(0, 99):02d} € incl. VAT.",
        lambda: f"It costs ${r(1, 99)},{r(100, 999)}.{r(0, 99):02d} per year.",
        lambda: f"Population {r(1, 99)} {r(100, 999)} {r(100, 999)} in {r(1990, 2024)}.",
        lambda: f"Server at 10.{r(0, 255)}.{r(0, 255)}.{r(0, 255)} port {r(1024, 65535)}.",
        lambda: f"ISBN 978-{r(0, 9)}-{r(10, 99)}-{r(100_000, 999_999)}-{r(0, 9)} is out of print.",
        lambda: f"Coordinates {r(-89, 89)}.{r(1000, 9999)}, {r(-179, 179)}.{r(1000, 9999)}.",
        lambda: f"Unix time {r(1_500_000_000, 1_800_000_000)} in the log.",
        lambda: f"Compute {r(10_000, 99_999)} * {r(10_000, 99_999)} for me.",
        lambda: f"Ticket {r(100_000, 999_999)} was closed after {r(2, 90)} days.",
        lambda: f"Tracking 1Z{r(100, 999)}AA{r(10**9, 10**10)} is in transit.",
        lambda: f"Flight LH{r(100, 9999)} departs {d():%H:%M}, gate B{r(1, 60)}.",
        lambda: f"Between {r(1, 500)} and {r(501, 5000)} units, {r(1, 99)}% defective.",
        lambda: f"Call reference CR-{r(100000, 999999)} from {d():%Y-%m-%d}.",
        lambda: f"Room {r(100, 999)}, floor {r(1, 30)}, desk {r(1, 99)}.",
        lambda: f"The file is {r(1, 999)} {r(100, 999)} {r(100, 999)} bytes.",
        lambda: f"Score {r(0, 100)}-{r(0, 100)} after {r(1, 9)} rounds.",
        lambda: f"uuid {rng.getrandbits(128):032x} belongs to the job.",
        lambda: f"Release {d():%Y.%m.%d} and {d():%Y.%m}.{r(1, 9)} are out.",
        lambda: f"Opening hours {r(7, 10)}:00-{r(16, 20)}:30, {d():%d.%m.}-{d():%d.%m.%Y}.",
        lambda: f"Part no. {r(1000, 9999)}-{r(1000, 9999)}-{r(10, 99)} is in stock.",
        lambda: f"Reading {r(0, 9)}.{r(1000, 999999)} mSv/h at {d():%H:%M}.",
        lambda: f"Batch B-{d():%Y-%m}-{r(1, 9999):04d} passed QC.",
        lambda: f"Invoice {d():%Y}/{r(1, 999999):06d} dated {d():%d.%m.%Y}.",
        lambda: f"MAC {':'.join(f'{r(0, 255):02X}' for _ in range(6))} joined.",
        lambda: f"Build {d():%Y%m%d}.{r(1, 9)} of app {r(1, 9)}.{r(0, 99)}.{r(0, 999)}.",
        lambda: f"GPS {r(0, 89)}.{r(1000, 9999)} N, {r(0, 179)}.{r(1000, 9999)} E.",
        lambda: f"Stock {r(1, 9)} {r(100, 999)} units at {r(1, 99)},{r(10, 99)} € each.",
        lambda: f"Elapsed {r(0, 23):02d}:{r(0, 59):02d}:{r(0, 59):02d}.{r(0, 999):03d}.",
        lambda: f"Lottery numbers {' '.join(f'{r(1, 49):02d}' for _ in range(6))}.",
        lambda: f"Sizes {r(10, 20)} {r(21, 30)} {r(31, 40)} {r(41, 50)} and {r(51, 60)} fit.",
        lambda: f"Case #{r(0, 99_999_999):08d} was escalated.",
        lambda: f"See CVE-{d():%Y}-{r(1000, 99999)} for details.",
        lambda: f"Balance {r(1, 9)} {r(100, 999)} {r(100, 999)},{r(10, 99)} on the account.",
        lambda: f"Postcode {r(10000, 99999)}, {r(1, 200)} Main Street.",
        lambda: f"Firmware v{r(1, 9)}.{r(0, 9)}.{r(0, 9)}-rc{r(1, 5)} build {r(1000, 99999)}.",
    ]
    return [rng.choice(makers)() for _ in range(count)]
