"""A seeded, labelled multi-locale corpus of free texts with identifiers in them.

Each record is one customer note in the customer's language, written from templates that embed
Faker values of the customer's locale, with the character span of every embedded identifier:

    {"text": "Customer Ruth Baker called from (0306) 999 0141 on 03/04/2021 ...",
     "spans": [[9, 19, "PERSON"], [32, 47, "PHONE"]],
     "locale": "en_GB",
     "own": {"name": ..., "email": ..., "phone": ..., "address": ..., "national_id": ...}}

`own` is the record's own structured identifiers (what a dataset holds in its columns); the
corpus' known names are every record's own name, so a text that mentions another customer
(`{other}` in a template) mentions a name the dataset holds. Texts also carry distractors that
are not identifiers (dates, times, prices, 5-6 digit order numbers, Luhn-invalid card numbers),
so that precision means something. Nothing here imports the scrubber: the corpus measures it.

    PYTHONPATH=. python -m benchmarks.pii_corpus --out corpus.json [--n 2000] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faker import Faker
from stdnum import iban as stdnum_iban

# locale -> template language
LOCALES = {
    "en_US": "en",
    "en_GB": "en",
    "en_IN": "en",
    "en_AU": "en",
    "de_DE": "de",
    "fr_FR": "fr",
    "es_ES": "es",
    "it_IT": "it",
    "nl_NL": "nl",
    "pt_BR": "pt",
    "pl_PL": "pl",
    "zh_CN": "zh",
    "ja_JP": "ja",
}

# Template field -> entity of its span (None: a distractor, not labelled). `natid` is the
# record's own national id; its entity depends on the locale (NATIONAL_ID_ENTITY).
FIELDS: dict[str, str | None] = {
    "name": "PERSON",
    "other": "PERSON",
    "email": "EMAIL",
    "email2": "EMAIL",
    "phone": "PHONE",
    "phone2": "PHONE",
    "card": "CREDIT_CARD",
    "iban": "IBAN",
    "ssn": "US_SSN",
    "cnid": "CN_RESIDENT_ID",
    "ip": "IP_ADDRESS",
    "url": "URL",
    "address": "ADDRESS",
    "natid": "NATIONAL_ID",
    "date": None,
    "time": None,
    "price": None,
    "order": None,
    "badcard": None,
}
NATIONAL_ID_ENTITY = {"en_US": "US_SSN", "zh_CN": "CN_RESIDENT_ID"}

# Natural notes per language. CJK templates glue values to the text without spaces, as written.
TEMPLATES: dict[str, list[str]] = {
    "en": [
        "Customer {name} called from {phone} on {date} about order {order}.",
        "Please send the invoice for {price} to {email} before {time}.",
        "{name} paid {price} with card {card} (order {order}).",
        "Refund to IBAN {iban}, confirmation sent to {email2}.",
        "SSN {ssn} verified for {name}, login from {ip} at {time}.",
        "Referred by {other}; they can be reached at {phone2}.",
        "See {url} for the ticket; reference {badcard} is not a card number.",
        "Moved to {address}. New phone: {phone}.",
        "Chinese ID {cnid} on file; contact {name} via {email}.",
        "Spoke with {other} and {name} on {date}, callback {phone2} after {time}.",
        "National ID {natid} checked on {date}.",
        "Server log: {ip} requested {url} at {time}.",
    ],
    "de": [
        "Kunde {name} rief am {date} von {phone} an, Bestellung {order}.",
        "Bitte die Rechnung über {price} an {email} senden.",
        "Zahlung mit Karte {card} um {time} eingegangen.",
        "Erstattung auf IBAN {iban}, Bestätigung an {email2}.",
        "Empfohlen von {other}, erreichbar unter {phone2}.",
        "Neue Anschrift: {address}. Telefon {phone}.",
        "Anmeldung von {ip} um {time}, siehe {url}.",
        "Die Nummer {badcard} ist keine Kartennummer, Auftrag {order}.",
        "US-Sozialversicherungsnummer {ssn} für {name} geprüft.",
        "Chinesischer Ausweis {cnid} liegt vor, Kontakt: {name}.",
        "Rückruf bei {other} unter {phone2} am {date}.",
    ],
    "fr": [
        "Le client {name} a appelé le {date} depuis le {phone}, commande {order}.",
        "Merci d'envoyer la facture de {price} à {email}.",
        "Paiement par carte {card} reçu à {time}.",
        "Remboursement sur l'IBAN {iban}, confirmation envoyée à {email2}.",
        "Recommandé par {other}, joignable au {phone2}.",
        "Nouvelle adresse : {address}. Tél. {phone}.",
        "Connexion depuis {ip} à {time}, voir {url}.",
        "Le numéro {badcard} n'est pas une carte, commande {order}.",
        "Numéro de sécurité sociale américain {ssn} vérifié pour {name}.",
        "Pièce d'identité chinoise {cnid} reçue, contact : {name}.",
        "Numéro d'identité {natid} vérifié le {date}.",
    ],
    "es": [
        "El cliente {name} llamó el {date} desde el {phone}, pedido {order}.",
        "Envíe la factura de {price} a {email}, por favor.",
        "Pago con tarjeta {card} recibido a las {time}.",
        "Reembolso a la cuenta IBAN {iban}; confirmación enviada a {email2}.",
        "Recomendado por {other}, su teléfono es {phone2}.",
        "Nueva dirección: {address}. Teléfono {phone}.",
        "Acceso desde {ip} a las {time}, ver {url}.",
        "El número {badcard} no es una tarjeta, pedido {order}.",
        "Número de seguro social {ssn} verificado para {name}.",
        "Documento chino {cnid} recibido, contacto: {name}.",
        "DNI {natid} comprobado el {date}.",
    ],
    "it": [
        "Il cliente {name} ha chiamato il {date} dal numero {phone}, ordine {order}.",
        "Inviare la fattura di {price} a {email}.",
        "Pagamento con carta {card} ricevuto alle {time}.",
        "Rimborso sull'IBAN {iban}, conferma inviata a {email2}.",
        "Segnalato da {other}, reperibile al {phone2}.",
        "Nuovo indirizzo: {address}. Tel. {phone}.",
        "Accesso da {ip} alle {time}, vedi {url}.",
        "Il numero {badcard} non è una carta, ordine {order}.",
        "Numero di previdenza sociale USA {ssn} verificato per {name}.",
        "Documento cinese {cnid} ricevuto, contatto: {name}.",
        "Codice fiscale {natid} verificato il {date}.",
    ],
    "nl": [
        "Klant {name} belde op {date} vanaf {phone} over bestelling {order}.",
        "Stuur de factuur van {price} naar {email}.",
        "Betaling met kaart {card} ontvangen om {time}.",
        "Terugbetaling naar IBAN {iban}, bevestiging naar {email2}.",
        "Doorverwezen door {other}, bereikbaar op {phone2}.",
        "Nieuw adres: {address}. Telefoon {phone}.",
        "Ingelogd vanaf {ip} om {time}, zie {url}.",
        "Nummer {badcard} is geen kaartnummer, bestelling {order}.",
        "Amerikaans SSN {ssn} gecontroleerd voor {name}.",
        "Chinees identiteitsbewijs {cnid} ontvangen, contact: {name}.",
        "BSN {natid} gecontroleerd op {date}.",
    ],
    "pt": [
        "O cliente {name} ligou em {date} do número {phone}, pedido {order}.",
        "Envie a fatura de {price} para {email}.",
        "Pagamento com cartão {card} recebido às {time}.",
        "Reembolso para o IBAN {iban}, confirmação enviada para {email2}.",
        "Indicado por {other}, telefone {phone2}.",
        "Novo endereço: {address}. Telefone {phone}.",
        "Acesso a partir de {ip} às {time}, veja {url}.",
        "O número {badcard} não é um cartão, pedido {order}.",
        "SSN americano {ssn} verificado para {name}.",
        "Documento chinês {cnid} recebido, contato: {name}.",
        "CPF {natid} conferido em {date}.",
    ],
    "pl": [
        "Klient {name} dzwonił {date} z numeru {phone}, zamówienie {order}.",
        "Proszę wysłać fakturę na {price} na adres {email}.",
        "Płatność kartą {card} otrzymana o {time}.",
        "Zwrot na IBAN {iban}, potwierdzenie wysłane na {email2}.",
        "Polecony przez {other}, telefon {phone2}.",
        "Nowy adres: {address}. Telefon {phone}.",
        "Logowanie z {ip} o {time}, zobacz {url}.",
        "Numer {badcard} nie jest numerem karty, zamówienie {order}.",
        "Amerykański SSN {ssn} sprawdzony dla {name}.",
        "PESEL {natid} sprawdzony {date}.",
    ],
    "zh": [
        "客户{name}于{date}来电，电话{phone}，订单号{order}。",
        "朋友{other}的邮箱是{email2}。",
        "请把{price}的发票发到{email}。",
        "用卡{card}付款，时间{time}。",
        "退款到IBAN{iban}，确认邮件已发至{email}。",
        "由{other}推荐，联系电话{phone2}。",
        "新地址：{address}，电话{phone}。",
        "身份证号{cnid}，已与{name}确认信息。",
        "登录IP{ip}，参见{url}。",
        "编号{badcard}不是银行卡号，订单{order}。",
        "美国社会安全号{ssn}已核实，客户{name}。",
        "推荐人{other}，电话{phone2}，{date}{time}回访。",
    ],
    "ja": [
        "顧客{name}様から{date}に{phone}より電話あり、注文番号{order}。",
        "請求書（{price}）を{email}に送ってください。",
        "カード{card}で{time}に支払い済み。",
        "IBAN{iban}へ返金、確認メールは{email2}へ。",
        "{other}さんの紹介、連絡先は{phone2}です。",
        "新住所：{address}、電話{phone}。",
        "{ip}からログイン、{url}を参照。",
        "番号{badcard}はカード番号ではありません。注文{order}。",
        "米国SSN{ssn}を{name}様について確認済み。",
        "中国の身分証{cnid}を受領、担当{name}。",
    ],
}

DATE_FORMATS = {
    "en_US": "%m/%d/%Y",
    "de_DE": "%d.%m.%Y",
    "nl_NL": "%d-%m-%Y",
    "pl_PL": "%d.%m.%Y",
    "zh_CN": "%Y年%m月%d日",
    "ja_JP": "%Y年%m月%d日",
}
PRICE_FORMATS = {
    "en_US": "${}.{:02d}",
    "en_GB": "£{}.{:02d}",
    "en_IN": "Rs. {}.{:02d}",
    "en_AU": "A${}.{:02d}",
    "pt_BR": "R$ {},{:02d}",
    "pl_PL": "{},{:02d} zł",
    "zh_CN": "{}.{:02d}元",
    "ja_JP": "¥{},{:03d}",
}
CARD_TYPES = (
    "amex",
    "diners",
    "discover",
    "jcb15",
    "jcb16",
    "maestro",
    "mastercard",
    "visa13",
    "visa16",
    "visa19",
)


def luhn_ok(digits: str) -> bool:
    """The Luhn check of a digit string (written here, not imported: the corpus is independent)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def fill(template: str, values: dict[str, str]) -> tuple[str, list[list[Any]]]:
    """The template with its fields filled, and the [start, end, entity] span of each labelled
    field (distractor fields get no span)."""
    out, spans, pos = [], [], 0
    for literal, field, _, _ in string.Formatter().parse(template):
        out.append(literal)
        pos += len(literal)
        if field is None:
            continue
        value = values[field]
        entity = values.get(f"{field}:entity", FIELDS[field])
        if entity is not None:
            spans.append([pos, pos + len(value), entity])
        out.append(value)
        pos += len(value)
    return "".join(out), spans


def _group(digits: str, sizes: list[int], sep: str) -> str:
    parts, i = [], 0
    for size in sizes:
        parts.append(digits[i : i + size])
        i += size
    if i < len(digits):
        parts.append(digits[i:])
    return sep.join(p for p in parts if p)


def _card_format(rng: random.Random, digits: str) -> str:
    sep = rng.choice(["", "", " ", " ", "-", "."])
    if not sep:
        return digits
    sizes = {15: [4, 6, 5], 14: [4, 6, 4]}.get(len(digits), [4] * 5)
    return _group(digits, sizes, sep)


def _bad_card(rng: random.Random) -> str:
    body = rng.choice("456") + "".join(str(rng.randrange(10)) for _ in range(14))
    digits = body + next(d for d in "0123456789" if not luhn_ok(body + d))
    return _card_format(rng, digits)


def _phone_variant(rng: random.Random, phone: str) -> str:
    """The number as Faker wrote it, or without its '+', its trunk 0, or with dots."""
    r = rng.random()
    if r < 0.12 and phone.startswith("+"):
        return phone[1:]
    if r < 0.24 and phone.startswith("0"):
        return phone[1:]
    if r < 0.34 and any(c in phone for c in " -"):
        return phone.replace(" ", ".").replace("-", ".")
    return phone


def _url(rng: random.Random, fake: Faker) -> str:
    r = rng.random()
    url = fake.uri() if r < 0.4 else fake.url()
    if r >= 0.7 and r < 0.85:
        url = "www." + fake.domain_name()
    if rng.random() < 0.15:
        url = url.upper()
    return url


def _iban(rng: random.Random, fake: Faker, fallback: Faker) -> str:
    iban = fake.iban()
    if not stdnum_iban.is_valid(iban):
        # Faker 40's en_IN and zh_CN write 21-character GB IBANs (GB needs 22): not an IBAN.
        iban = fallback.iban()
    if rng.random() < 0.5:
        iban = _group(iban, [4] * 9, " ")
    return iban.lower() if rng.random() < 0.2 else iban


def _ssn(rng: random.Random, ssn: str) -> str:
    r = rng.random()
    if r < 0.15:
        return ssn.replace("-", "")
    if r < 0.3:
        return ssn.replace("-", " ")
    return ssn


def _name(fake: Faker, locale: str, rng: random.Random) -> str:
    first, last = fake.first_name(), fake.last_name()
    if locale == "zh_CN":
        return last + first
    if locale == "ja_JP":
        return f"{last} {first}"
    if locale == "es_ES" and rng.random() < 0.5:
        return f"{first} {last} {fake.last_name()}"
    return f"{first} {last}"


def _national_id(fake: Faker, locale: str) -> str | None:
    maker = {
        "en_US": fake.ssn,
        "en_GB": fake.ssn,
        "fr_FR": fake.ssn,
        "it_IT": fake.ssn,
        "nl_NL": fake.ssn,
        "zh_CN": fake.ssn,
        "es_ES": getattr(fake, "nif", None),
        "pt_BR": getattr(fake, "cpf", None),
        "pl_PL": getattr(fake, "pesel", None),
    }.get(locale)
    return maker() if maker else None


def _identity(fake: Faker, locale: str, rng: random.Random) -> dict[str, str | None]:
    return {
        "name": _name(fake, locale, rng),
        "email": fake.email(),
        "phone": fake.phone_number(),
        "address": ", ".join(line.strip() for line in fake.address().splitlines()),
        "national_id": _national_id(fake, locale),
    }


@dataclass(frozen=True)
class _Record:
    """What the fillers of one record's template fields draw on."""

    rng: random.Random
    fakers: dict[str, Faker]
    owns: list[dict[str, str | None]]
    i: int
    loc: str

    @property
    def fake(self) -> Faker:
        return self.fakers[self.loc]

    @property
    def own(self) -> dict[str, str | None]:
        return self.owns[self.i]


def _other(r: _Record) -> dict[str, str]:
    j = r.rng.randrange(len(r.owns) - 1)  # another customer, never this one
    return {"other": r.owns[j + (j >= r.i)]["name"]}


def _email2(r: _Record) -> dict[str, str]:
    return {"email2": r.fake.free_email() if r.rng.random() < 0.5 else r.fake.company_email()}


def _phone(r: _Record) -> dict[str, str]:
    own = r.own["phone"]
    return {"phone": own if r.rng.random() < 0.7 else _phone_variant(r.rng, own)}


def _card(r: _Record) -> dict[str, str]:
    number = r.fakers["en_US"].credit_card_number(r.rng.choice(CARD_TYPES))
    return {"card": _card_format(r.rng, number)}


def _ssn_field(r: _Record) -> dict[str, str]:
    own = r.own["national_id"] if r.loc == "en_US" else r.fakers["en_US"].ssn()
    return {"ssn": _ssn(r.rng, own)}


def _natid(r: _Record) -> dict[str, str]:
    entity = NATIONAL_ID_ENTITY.get(r.loc, "NATIONAL_ID")
    return {"natid": r.own["national_id"], "natid:entity": entity}


def _date(r: _Record) -> dict[str, str]:
    fmt = DATE_FORMATS.get(r.loc, "%Y-%m-%d" if r.rng.random() < 0.3 else "%d/%m/%Y")
    return {"date": r.fake.date_between("-5y", "today").strftime(fmt)}


def _price(r: _Record) -> dict[str, str]:
    fmt = PRICE_FORMATS.get(r.loc, "{},{:02d} €")
    return {"price": fmt.format(r.rng.randrange(1, 999), r.rng.randrange(100))}


# Template field -> its filler, in the order they draw from the seeded generators (the order
# fixes the corpus a seed gives: do not reorder).
_FILLERS: dict[str, Callable[[_Record], dict[str, str]]] = {
    "other": _other,
    "email2": _email2,
    "phone": _phone,
    "phone2": lambda r: {"phone2": _phone_variant(r.rng, r.fake.phone_number())},
    "card": _card,
    "iban": lambda r: {"iban": _iban(r.rng, r.fake, r.fakers["en_GB"])},
    "ssn": _ssn_field,
    "cnid": lambda r: {
        "cnid": r.own["national_id"] if r.loc == "zh_CN" else r.fakers["zh_CN"].ssn()
    },
    "natid": _natid,
    "ip": lambda r: {"ip": r.fake.ipv6() if r.rng.random() < 0.3 else r.fake.ipv4_public()},
    "url": lambda r: {"url": _url(r.rng, r.fake)},
    "date": _date,
    "time": lambda r: {"time": f"{r.rng.randrange(7, 22)}:{r.rng.randrange(60):02d}"},
    "price": _price,
    "order": lambda r: {"order": str(r.rng.randrange(10_000, 1_000_000))},
    "badcard": lambda r: {"badcard": _bad_card(r.rng)},
}


def _text(r: _Record) -> dict[str, Any]:
    """One record: a template of the locale's language filled with its values, and the spans."""
    own = r.own
    templates = TEMPLATES[LOCALES[r.loc]]
    if not own["national_id"]:
        templates = [t for t in templates if "{natid}" not in t]
    template = r.rng.choice(templates)
    used = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    values = {"name": own["name"], "email": own["email"], "address": own["address"]}
    for field, filler in _FILLERS.items():
        if field in used:
            values.update(filler(r))
    text, spans = fill(template, values)
    return {"text": text, "spans": spans, "locale": r.loc, "own": own}


def generate(n: int = 2000, seed: int = 7) -> dict[str, Any]:
    """n labelled records (locales in turn) and the corpus' known names; the same for a seed."""
    rng = random.Random(seed)
    locales = list(LOCALES)
    fakers = {}
    for k, loc in enumerate(locales):
        fakers[loc] = Faker(loc)
        fakers[loc].seed_instance(seed * 1000 + k)
    people = [locales[i % len(locales)] for i in range(n)]
    owns = [_identity(fakers[loc], loc, rng) for loc in people]
    records = [_text(_Record(rng, fakers, owns, i, loc)) for i, loc in enumerate(people)]
    return {"seed": seed, "known_names": known_names(records), "records": records}


def known_names(records: list[dict[str, Any]]) -> list[str]:
    """The corpus' known names: every record's own name (the dataset's name column)."""
    return sorted({r["own"]["name"] for r in records if r["own"].get("name")})


ADVERSARIAL = Path(__file__).with_name("pii_adversarial.json")


def load(path: str | Path = ADVERSARIAL) -> dict[str, Any]:
    """A corpus file written by this module (or the hand-written adversarial file)."""
    corpus = json.loads(Path(path).read_text(encoding="utf-8"))
    corpus.setdefault("known_names", known_names(corpus["records"]))
    return corpus


def main(argv: list[str] | None = None) -> int:
    """Write a generated corpus as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    corpus = generate(args.n, args.seed)
    Path(args.out).write_text(json.dumps(corpus, ensure_ascii=False, indent=0), encoding="utf-8")
    n_spans = sum(len(r["spans"]) for r in corpus["records"])
    print(f"{args.out}: {len(corpus['records'])} texts, {n_spans} labelled spans")
    return 0


if __name__ == "__main__":
    sys.exit(main())
