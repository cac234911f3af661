"""Email parsing, by tables of realistic mail: charsets, encoded words, HTML-only mail,
attachments, forwarded mail, and which mail must never be acknowledged.

Expected texts are written out by hand from what each client put in the mail, and
attachment hashes are computed from the files the sender attached, not from our parser.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from inbox.models import DeadLetter, Intake
from normalizer.mail import automated_reason, parse_email
from normalizer.message import ParseError
from tests.support.emails import SCREENSHOT_PNG, STATEMENT_PDF, eml
from tests.support.helpers import case_of, ingest, normalize

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def parse(raw: bytes, **envelope: Any):
    return parse_email(raw, envelope=envelope, received_at=NOW)


# fixture -> (sender, display name, subject, text)
PARSE_TABLE: dict[str, tuple[str, str, str, str]] = {
    "gmail_first_contact.eml": (
        "ann.example@gmail.com",
        "Ann Example",
        "Locked out of my account after changing phones",
        "Hello,\n\nsince I switched to a new phone I can\u2019t log in to my account any more.\n"
        "The app asks for a code from my old authenticator, and that phone was\n"
        "wiped at the shop. I still have my recovery email and my ID card.\n\n"
        "Could you please help me get back in? I need the invoices for my tax\n"
        "return by Friday.\n\nThanks,\nAnn\n",
    ),
    # ISO-8859-1 body sent 8bit, encoded words in From and Subject.
    "thunderbird_latin1_8bit.eml": (
        "g.lefevre@free.example",
        "Gérard Lefèvre",
        "Facture déjà payée",
        "Bonjour,\n\nla facture n° 2026-1142 a déjà été payée le 3 novembre.\n"
        "Merci de vérifier.\n\nGérard\n",
    ),
    # windows-1252 quoted-printable: euro sign, curly quotes, en dash.
    "outlook_windows1252.eml": (
        "priya.raman@outlook.com",
        "Priya Raman",
        "Charged for “Premium” plan",
        "Hello,\n\nI was charged €49.00 for the “Premium” plan – I never ordered it.\n"
        "Please refund it.\n\nRegards,\nPriya\n",
    ),
    # ISO-2022-JP, 7bit, with B-encoded words.
    "iso2022jp.eml": (
        "tanaka.hiroshi@example.ne.jp",
        "田中 博",
        "ログインできません",
        "サポートご担当者様\n\nログインできません。\nよろしくお願いします。\n\n田中\n",
    ),
    # UTF-8 base64 body and B-encoded Cyrillic subject and name.
    "copy_imap.eml": (
        "d.ivanov@yandex.example",
        "Дмитрий Иванов",
        "Не могу войти в аккаунт",
        "Здравствуйте!\n\nЯ не могу войти в аккаунт после смены пароля.\n"
        "Код из SMS не приходит.\n\nДмитрий\n",
    ),
    # Apple Mail: quoted-printable UTF-8 with typographic apostrophes.
    "apple_mail_token_new_address.eml": (
        "ann.ex@icloud.com",
        "Ann Example",
        "Re: [C-000001 #aaaaaaaaaaaa] Locked out of my account after changing phones",
        "I’m writing from my iCloud address because I can’t open Gmail on\n"
        "the new phone. Here is the photo of my ID you asked for.\n\nSent from my iPhone\n",
    ),
    # Outlook's "Last, First" display name in quotes.
    "outlook_work_reference.eml": (
        "ann.example@contoso.co.uk",
        "Example, Ann",
        "RE: [C-000001] Locked out of my account after changing phones",
        "Hi,\n\nWriting from my work address as I still can't get into my personal one.\n"
        "Is there any news on case C-000001?\n\nKind regards,\nAnn Example\n"
        "Accounts Payable | Contoso Ltd\n",
    ),
}


@pytest.mark.parametrize("fixture", list(PARSE_TABLE))
def test_parse(fixture):
    sender, name, subject, text = PARSE_TABLE[fixture]
    message = parse(eml(fixture))
    assert (message.sender.handle, message.sender.name) == (sender, name)
    assert message.subject == subject
    assert message.text == text
    assert message.channel == "email" and message.visibility == "private"
    assert message.automated is None


def test_html_only_mail_gets_readable_text():
    message = parse(eml("html_only_latin1.eml"))
    assert message.sender.name == "François Bérubé"
    assert message.subject == "Problème de connexion à mon compte"
    assert message.html is not None and "<p>Bonjour,</p>" in message.html
    assert message.text == (
        "Bonjour,\n\n"
        "Je n'arrive plus à me connecter depuis mardi\u00a0: le site me dit que mon mot de passe "
        "est expiré.\n\n"
        "Pouvez-vous m'aider\u00a0? Merci & bonne journée,\n\n"
        "François Bérubé"
    ).replace("\u00a0", " ")
    # The title, the style sheet and the tracking script are not text.
    for hidden in ("Support", "font-family", "trackOpen"):
        assert hidden not in message.text


def test_multipart_alternative_keeps_both_bodies():
    message = parse(eml("gmail_first_contact.eml"))
    assert message.text.startswith("Hello,\n\nsince I switched")
    assert message.html is not None and message.html.startswith('<div dir="ltr">')
    assert message.attachments == ()


def test_attachments_have_name_type_size_and_content():
    message = parse(eml("thunderbird_attachments.eml"))
    assert message.sender.name == "Bob Müller"
    assert message.subject == "Doppelte Abbuchung im März"
    assert message.text.startswith("Guten Tag,\n\nim März wurde mein Abo zweimal abgebucht")
    assert [(a.filename, a.content_type, a.data) for a in message.attachments] == [
        ("screenshot.png", "image/png", SCREENSHOT_PNG),
        ("Kontoauszug März.pdf", "application/pdf", STATEMENT_PDF),  # RFC 2231 name
    ]


def test_a_forwarded_mail_is_an_attachment_and_does_not_thread():
    message = parse(eml("thunderbird_forward_as_attachment.eml"))
    assert message.subject == "Fwd: Your account has been suspended"
    assert message.text == (
        "I got this mail last night. Is it really from you? I did not click\nthe link.\n\nBob\n"
    )
    [forwarded] = message.attachments
    assert forwarded.content_type == "message/rfc822"
    assert forwarded.filename == "Your account has been suspended.eml"
    assert b"Subject: Your account has been suspended" in forwarded.data
    assert b"See case C-000777." in forwarded.data
    # Neither the forwarded Message-ID nor the reference inside it is this mail's.
    assert message.own_refs == ("0a9b8c7d-6e5f-4a3b-2c1d-0e9f8a7b6c5d@posteo.de",)
    assert "C-000777" not in message.text


def test_a_delivery_report_keeps_its_status_as_one_attachment():
    message = parse(eml("bounce_dsn.eml"))
    assert message.text.startswith("I'm sorry to have to inform you")
    [report] = message.attachments
    assert report.content_type == "message/delivery-status"
    assert b"Final-Recipient: rfc822; nobody@example.net" in report.data
    assert b"Status: 5.1.1" in report.data


def test_reply_headers_are_read_in_order():
    message = parse(eml("thunderbird_reply_references.eml"))
    assert message.thread.in_reply_to == (
        "AM9PR07MB7211F0E6D5C4B3A29180@AM9PR07MB7211.eurprd07.prod.outlook.com",
    )
    assert message.thread.references == (
        "8d2f6a90-3c1e-4b7d-9f25-1e6a0c4b7d3f@posteo.de",
        "AM9PR07MB7211F0E6D5C4B3A29180@AM9PR07MB7211.eurprd07.prod.outlook.com",
    )
    assert message.sent_at == datetime(2026, 11, 25, 15, 2, 47, tzinfo=UTC)


ENCODED_WORDS = [
    ("=?UTF-8?B?0J3QtSDQvNC+0LPRgyDQstC+0LnRgtC4?=", "Не могу войти"),
    ("=?ISO-8859-1?Q?Probl=E8me_de_connexion?=", "Problème de connexion"),
    ("=?iso-8859-15?q?Preis_=A4_20?=", "Preis € 20"),
    ("=?utf-8?q?caf=C3=A9?= =?utf-8?q?_cr=C3=A8me?=", "café crème"),  # joined, RFC 2047 §6.2
    ("Re: =?windows-1252?Q?=93quoted=94?= text", "Re: “quoted” text"),
    ("=?UTF-8?Q?Fwd=3A_Rechnung?=\r\n =?UTF-8?Q?_f=C3=BCr_M=C3=A4rz?=", "Fwd: Rechnung für März"),
    ("Plain ASCII subject\r\n\tfolded over two lines", "Plain ASCII subject folded over two lines"),
]


@pytest.mark.parametrize(("header", "expected"), ENCODED_WORDS)
def test_encoded_word_subjects(header, expected):
    raw = (
        b"From: a@example.org\r\nSubject: " + header.encode("ascii") + b"\r\n"
        b"Message-ID: <ew@example.org>\r\n\r\nbody\r\n"
    )
    assert parse(raw).subject == expected


BODY_CHARSETS = [
    ("koi8-r", "8bit", "Привет, не работает вход", "Привет, не работает вход".encode("koi8-r")),
    ("utf-8", "base64", "Grüße", b"R3LDvMOfZQ=="),
    ("iso-8859-2", "quoted-printable", "Dzień dobry", b"Dzie=F1 dobry"),
    ("gb2312", "8bit", "无法登录", "无法登录".encode("gb2312")),
    # A label we don't know: the bytes are still readable as UTF-8.
    ("x-unknown-charset", "8bit", "café", "café".encode()),
]


@pytest.mark.parametrize(("charset", "cte", "expected", "body"), BODY_CHARSETS)
def test_body_charsets(charset, cte, expected, body):
    raw = (
        b"From: a@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=" + charset.encode() + b"\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body + b"\r\n"
    )
    assert parse(raw).text.strip() == expected


def test_a_body_that_lies_about_its_charset_is_still_text():
    raw = (
        b"From: a@example.org\r\nSubject: s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        + "Grüße".encode()
        + b"\r\n"
    )
    text = parse(raw).text
    assert text.startswith("Gr") and text.strip().endswith("e")


def test_rfc6532_utf8_addresses_are_read_as_utf8():
    # SMTPUTF8 mail (our SMTP server offers it) carries raw UTF-8 in address headers.
    raw = (
        "From: Jörg Müller <jörg@bücher.example>\r\nTo: support@support.example.com\r\n"
        "Subject: Grüße aus Köln\r\nMessage-ID: <utf8-addr@bücher.example>\r\n\r\nHallo\r\n"
    ).encode()
    message = parse(raw)
    assert message.sender.handle == "jörg@bücher.example"
    assert message.sender.name == "Jörg Müller"
    assert message.subject == "Grüße aus Köln"


def test_no_headers_is_not_a_mail():
    with pytest.raises(ParseError, match="no headers"):
        parse(b"Just some text that someone pasted into the ingest command.\n")


# --- which mail must never be acknowledged --------------------------------------------------

PERSON = {"from": "Ann Example <ann.example@gmail.com>", "subject": "help"}
AUTOMATED_TABLE: list[tuple[str, dict[str, str], str | None, str, str, str | None]] = [
    # name, headers, envelope sender, sender address, content type, expected reason prefix
    ("a person", PERSON, "ann.example@gmail.com", "ann.example@gmail.com", "text/plain", None),
    (
        "Auto-Submitted: no is a person",
        {**PERSON, "auto-submitted": "No"},
        None,
        "ann.example@gmail.com",
        "text/plain",
        None,
    ),
    (
        "vacation reply",
        {**PERSON, "auto-submitted": "auto-replied"},
        None,
        "ann.example@gmail.com",
        "text/plain",
        "auto-submitted: auto-replied",
    ),
    (
        "Auto-Submitted with a comment",
        {**PERSON, "auto-submitted": "auto-generated; owner-email=it@example.org"},
        None,
        "alerts@example.org",
        "text/plain",
        "auto-submitted: auto-generated",
    ),
    (
        "delivery report",
        PERSON,
        None,
        "mailer-daemon@mx.example.net",
        "multipart/report",
        "bounce: delivery status notification",
    ),
    (
        "null reverse path",
        PERSON,
        "",
        "ann.example@gmail.com",
        "text/plain",
        "bounce: null reverse path",
    ),
    (
        "null reverse path <>",
        PERSON,
        "<>",
        "x@example.org",
        "text/plain",
        "bounce: null reverse path",
    ),
    (
        "Precedence: bulk",
        {**PERSON, "precedence": "bulk"},
        None,
        "news@shop.example",
        "text/plain",
        "precedence: bulk",
    ),
    (
        "Precedence: list",
        {**PERSON, "precedence": "List"},
        None,
        "a@lists.example",
        "text/plain",
        "precedence: list",
    ),
    (
        "Precedence: junk",
        {**PERSON, "precedence": "junk"},
        None,
        "a@example.org",
        "text/plain",
        "precedence: junk",
    ),
    (
        "Precedence: first-class",
        {**PERSON, "precedence": "first-class"},
        None,
        "a@example.org",
        "text/plain",
        None,
    ),
    (
        "X-Autoreply",
        {**PERSON, "x-autoreply": "yes"},
        None,
        "a@example.org",
        "text/plain",
        "auto-reply header",
    ),
    (
        "X-Autorespond",
        {**PERSON, "x-autorespond": "1"},
        None,
        "a@example.org",
        "text/plain",
        "auto-reply header",
    ),
    (
        "mailing list",
        {**PERSON, "list-id": "<announce.lists.example.org>"},
        None,
        "a@lists.example.org",
        "text/plain",
        "mailing list",
    ),
    (
        "List-Unsubscribe only",
        {**PERSON, "list-unsubscribe": "<mailto:leave@example.org>"},
        None,
        "news@example.org",
        "text/plain",
        "mailing list",
    ),
    ("MAILER-DAEMON", PERSON, None, "MAILER-DAEMON@mx.example.net", "text/plain", "system sender"),
    ("postmaster", PERSON, None, "postmaster@example.org", "text/plain", "system sender"),
    ("noreply", PERSON, None, "noreply@shop.example", "text/plain", "system sender"),
    (
        "no-reply with a tag",
        PERSON,
        None,
        "no-reply+orders@shop.example",
        "text/plain",
        "system sender",
    ),
    ("do-not-reply", PERSON, None, "do-not-reply@bank.example", "text/plain", "system sender"),
    ("bounces", PERSON, None, "bounces-123@lists.example.org", "text/plain", "system sender"),
    ("a person named Noreen", PERSON, None, "noreen@example.org", "text/plain", None),
    (
        "our own mail come back",
        {**PERSON, "x-parity-case": "C-000001"},
        None,
        "support@support.example.com",
        "text/plain",
        "our own outbound mail",
    ),
]


@pytest.mark.parametrize(
    ("headers", "mail_from", "sender", "content_type", "expected"),
    [row[1:] for row in AUTOMATED_TABLE],
    ids=[row[0] for row in AUTOMATED_TABLE],
)
def test_automated_reason(headers, mail_from, sender, content_type, expected):
    reason = automated_reason(headers, mail_from, sender, content_type)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected)


@pytest.mark.parametrize(
    ("fixture", "envelope", "expected"),
    [
        ("gmail_vacation_auto_reply.eml", {}, "auto-submitted: auto-replied"),
        ("bounce_dsn.eml", {"mail_from": ""}, "auto-submitted"),
        ("mailing_list_digest.eml", {}, "precedence: list"),
        ("gmail_first_contact.eml", {"mail_from": "ann.example@gmail.com"}, None),
    ],
)
def test_automated_mail_is_recognised_in_fixtures(fixture, envelope, expected):
    automated = parse(eml(fixture), **envelope).automated
    assert automated == expected or (expected and automated and automated.startswith(expected))


# --- awkward but real content must be stored on both databases ------------------------------

AWKWARD: dict[str, bytes] = {
    "UTF-8 address (SMTPUTF8)": (
        "From: Jörg Müller <jörg@bücher.example>\r\nSubject: Grüße\r\n"
        "Message-ID: <utf8@bücher.example>\r\n\r\nHallo\r\n"
    ).encode(),
    "NUL bytes in the text": b"From: a@example.org\r\nSubject: nul\r\n\r\nbefore\x00after\r\n",
    "NUL in a UTF-16 text part read as UTF-8": (
        b"From: b@example.org\r\nSubject: utf16\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + "hello".encode("utf-16-le")
        + b"\r\n"
    ),
    "a 400-character display name": (
        b'From: "' + b"Very Long Name " * 27 + b'" <c@example.org>\r\nSubject: long\r\n\r\nhi\r\n'
    ),
    "an 800-character Message-ID": (
        b"From: d@example.org\r\nSubject: id\r\nMessage-ID: <" + b"x" * 780 + b"@example.org>\r\n"
        b"\r\nhi\r\n"
    ),
    "a 700-character subject": b"From: e@example.org\r\nSubject: "
    + b"word " * 140
    + b"\r\n\r\nhi\r\n",
    "a 600-character attachment name": (
        b"From: f@example.org\r\nSubject: att\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\n"
        b"see attached\r\n--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="' + b"n" * 600 + b'.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n"
    ),
    "a 400-character address": (
        b"From: " + b"g" * 380 + b"@example.org\r\nSubject: addr\r\n\r\nhi\r\n"
    ),
}


def test_awkward_content_is_stored_or_dead_lettered_never_crashes(engine):
    for name, raw in AWKWARD.items():
        ingest(engine, raw, source_key=f"awkward:{name}")
    outcomes = normalize(engine)
    assert len(outcomes) == len(AWKWARD)
    with engine.connect() as conn:
        states = dict(conn.execute(select(Intake.source_key, Intake.state)).all())
        dead = {r.intake_id for r in conn.execute(select(DeadLetter.intake_id))}
    assert set(states.values()) <= {"done", "dead"}
    assert {o.intake_id for o in outcomes if o.state == "dead"} == dead
    # All of these are real mail that a person wrote: each becomes a message.
    assert states == {f"awkward:{name}": "done" for name in AWKWARD}
    for outcome in outcomes:
        case = case_of(engine, outcome)
        assert case["messages"]


def test_utf8_address_and_nul_text_read_back(engine):
    ingest(engine, AWKWARD["UTF-8 address (SMTPUTF8)"])
    ingest(engine, AWKWARD["NUL bytes in the text"])
    first, second = normalize(engine)
    assert case_of(engine, first)["messages"][0]["from"] == "jörg@bücher.example"
    text = case_of(engine, second)["messages"][0]["text"]
    assert text.startswith("before") and text.rstrip().endswith("after")
    assert "\x00" not in text


def test_attachment_hashes_in_the_store(engine):
    ingest(engine, eml("thunderbird_attachments.eml"))
    [outcome] = normalize(engine)
    attachments = case_of(engine, outcome)["messages"][0]["attachments"]
    assert [(a["filename"], a["content_type"], a["size"], a["sha256"]) for a in attachments] == [
        (
            "screenshot.png",
            "image/png",
            len(SCREENSHOT_PNG),
            hashlib.sha256(SCREENSHOT_PNG).hexdigest(),
        ),
        (
            "Kontoauszug März.pdf",
            "application/pdf",
            len(STATEMENT_PDF),
            hashlib.sha256(STATEMENT_PDF).hexdigest(),
        ),
    ]
