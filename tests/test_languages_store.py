"""Languages in the store (issue 21), on SQLite and PostgreSQL: a new case takes the
language of its message (detected in parse) or its contact's, is acknowledged in it through
the real ack path (intake, the normalizer, the outbox), and the manager report breaks the
figures down by language as it does by channel.

The report's expected figures come from test_audit_report.py's oracle (plain Python over
the seeded events, never inbox/report.py), run over the events grouped by language.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import Engine, select, update

from inbox import report as report_mod
from inbox import report_rows
from inbox.models import Case, Message, Outbox
from tests.support.helpers import ingest, ingest_and_normalize, normalize
from tests.support.outbox_helpers import case_row, mail
from tests.test_audit_report import EVENTS, NOW, check_channels, expected, parity_cli, seed

# One message per language, as a person would write to a helpdesk.
WRITTEN = {
    "en": "I can't log in to my account since my phone was stolen, please help.",
    "es": "No puedo entrar en mi cuenta desde que me robaron el móvil, ¿me ayudan?",
    "fr": "Je n'arrive plus à me connecter depuis qu'on m'a volé mon téléphone, aidez-moi.",
    "de": "Ich komme nicht mehr in mein Konto, seit mein Handy gestohlen wurde. Bitte helfen.",
    "pt": "Não consigo entrar na minha conta desde que roubaram meu celular, podem ajudar?",
}
# The acknowledgement's subject and a sentence of its body in each language, by hand.
SUBJECT = {
    "en": "We have your message",
    "es": "Hemos recibido su mensaje",
    "fr": "Nous avons bien reçu votre message",
    "de": "Wir haben Ihre Nachricht erhalten",
    "pt": "Recebemos sua mensagem",
}
BODY = {
    "en": "we have your message and opened case {reference} for it.",
    "es": "hemos recibido su mensaje y hemos abierto el caso {reference}.",
    "fr": "nous avons bien reçu votre message et ouvert le dossier {reference}.",
    "de": "wir haben Ihre Nachricht erhalten und dafür den Fall {reference} angelegt.",
    "pt": "recebemos sua mensagem e abrimos o caso {reference}.",
}
SMS = {
    "en": "We have your message: case {reference}. A person will answer",
    "es": "Hemos recibido su mensaje: caso {reference}. Una persona le responderá",
    "fr": "Nous avons bien reçu votre message : dossier {reference}. Une personne vous répondra",
    "de": "Wir haben Ihre Nachricht erhalten: Fall {reference}. Eine Person antwortet Ihnen",
    "pt": "Recebemos sua mensagem: caso {reference}. Uma pessoa vai responder",
}


def _ack(engine: Engine, case_id: int | None) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(Outbox).where(Outbox.case_id == case_id, Outbox.kind == "ack")
        ).one()


@pytest.mark.parametrize("lang", list(WRITTEN))
def test_an_email_case_is_acknowledged_in_the_language_it_was_written_in(engine, lang):
    sender = f"Ann <ann.{lang}@example.org>"
    outcome = ingest_and_normalize(engine, mail("Hilfe / Ayuda", sender=sender, body=WRITTEN[lang]))
    case = case_row(engine, outcome.case_id)
    assert case.language == lang
    with engine.connect() as conn:
        stored = conn.execute(
            select(Message.language).where(Message.id == outcome.message_id)
        ).scalar_one()
    assert stored == lang
    row = _ack(engine, outcome.case_id)
    assert row.subject == f"[{case.reference} #{case.token}] {SUBJECT[lang]}"
    assert BODY[lang].format(reference=case.reference) in row.body


@pytest.mark.parametrize("lang", list(WRITTEN))
def test_an_sms_case_is_acknowledged_in_its_language(engine, lang):
    from tests.test_channel_contract import twilio_inputs

    (item, _) = twilio_inputs("sms")
    params = dict(__import__("urllib.parse").parse.parse_qsl(item.payload.decode()))
    params.update(Body=WRITTEN[lang], From=f"+4475570{list(WRITTEN).index(lang):05d}")
    params["MessageSid"] = f"SM{lang}{'0' * 30}"
    stored = ingest(
        engine,
        urlencode(params).encode(),
        channel="sms",
        connector="twilio",
        envelope=dict(item.envelope),
        source_key=f"sms:{params['MessageSid']}",
    )
    (outcome,) = [o for o in normalize(engine) if o.intake_id == stored.intake_id]
    case = case_row(engine, outcome.case_id)
    assert case.language == lang
    assert _ack(engine, outcome.case_id).body.startswith(SMS[lang].format(reference=case.reference))


def test_a_short_message_takes_the_contacts_known_language_else_english(engine):
    first = ingest_and_normalize(
        engine, mail("Konto", sender="Joerg <joerg@example.org>", body=WRITTEN["de"])
    )
    assert first.case_id is not None, first
    assert case_row(engine, first.case_id).language == "de"
    with engine.begin() as conn:  # resolved long ago: the next message opens a new case
        conn.execute(
            update(Case)
            .where(Case.id == first.case_id)
            .values(status="resolved", resolved_at=datetime(2026, 1, 1, tzinfo=UTC))
        )
    second = ingest_and_normalize(
        engine, mail("Re", sender="Joerg <joerg@example.org>", body="Danke!")
    )
    assert second.case_id != first.case_id
    assert case_row(engine, second.case_id).language == "de"
    # (Not acknowledged again: the same sender within the 24-hour sender window.)
    # A stranger's "ok" has nothing to go on: English.
    third = ingest_and_normalize(engine, mail("?", sender="x <x@example.org>", body="ok"))
    assert case_row(engine, third.case_id).language == "en"


# --- the manager report's language breakdown ---------------------------------------------

# Each seeded event's case language, chosen so that languages cut across channels.
LANGUAGE_OF = ["es", "en", "de", "es", "fr", "en", "pt", "es", "en", "de", "fr", "pt", "en"]


def _seed_languages(engine: Engine) -> list[Any]:
    by_ref = seed(engine, EVENTS)
    with engine.begin() as conn:
        for (reference, _), lang in zip(sorted(by_ref.items()), LANGUAGE_OF, strict=True):
            conn.execute(update(Case).where(Case.reference == reference).values(language=lang))
    # The same events, labelled by language instead of channel, for the oracle.
    order = [by_ref[r] for r in sorted(by_ref)]
    return [replace(e, channel=lang) for e, lang in zip(order, LANGUAGE_OF, strict=True)]


def test_the_report_has_the_same_figures_per_language_as_per_channel(engine):
    relabelled = _seed_languages(engine)
    with engine.connect() as conn:
        rows = report_rows.fetch(conn, NOW.replace(year=NOW.year - 1), NOW)
    data = report_mod.build(
        rows, now=NOW, since=NOW.replace(year=NOW.year - 1), until=NOW, threshold=2.0
    )
    want = expected(relabelled)
    check_channels(data["language"], want)
    assert list(data["language"]) == sorted(want)
    medians = [f["first_response_p50_s"] for f in want.values() if f["first_response_p50_s"]]
    assert data["language_parity_ratio"] == pytest.approx(max(medians) / min(medians), abs=1e-4)
    # The per-channel figures are untouched by the new dimension.
    check_channels(data["channels"], expected(EVENTS))
    # The drill-down: the references behind one language's cell.
    spanish = report_mod.select_cases(rows, now=NOW, language="es")
    assert len(spanish) == LANGUAGE_OF.count("es")


def test_the_command_prints_the_language_breakdown_as_json_and_csv(engine, db_url, tmp_path):
    relabelled = _seed_languages(engine)
    done = parity_cli(db_url, tmp_path, "--json", "--since", "30d")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    check_channels(data["language"], expected(relabelled))
    done = parity_cli(db_url, tmp_path, "--csv", "--since", "30d")
    lines = list(csv.reader(io.StringIO(done.stdout)))
    languages = {row[1]: row for row in lines if row[0] == "language"}
    assert set(languages) == set(LANGUAGE_OF)
    volume = lines[0].index("volume")
    assert {k: int(v[volume]) for k, v in languages.items()} == {
        lang: LANGUAGE_OF.count(lang) for lang in set(LANGUAGE_OF)
    }
