"""Meta's channels through intake and the normalizer, on both stores: an SMS and a WhatsApp
message from one number are one contact; every message type becomes a message of its case;
the agent's page offers both ways to reach a number."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Engine, func, select

from connectors.twilio.parse import source_key as twilio_source_key
from inbox.accounts import Principal
from inbox.casework import case_view
from inbox.models import Case, Contact, Identity, Message
from normalizer.intake import RawInput, store
from tests.channels.meta.test_outbox import deliver
from tests.channels.meta.test_webhooks import MESSAGES
from tests.channels.twilio.twilio_support import fixture as twilio_fixture
from tests.support.helpers import normalize
from tests.support.inbox_helpers import make_user

NUMBER = "+16315551181"  # the wa_id 16315551181 of our WhatsApp fixtures, in E.164


def sms_from(engine: Engine, number: str) -> None:
    params = twilio_fixture("sms")
    params["From"] = number
    store(
        engine,
        [
            RawInput(
                connector="twilio",
                channel="sms",
                source_key=twilio_source_key("sms", params),
                payload=urlencode(params).encode(),
                envelope={"kind": "sms", "address": params["To"]},
            )
        ],
    )
    normalize(engine)


def test_an_sms_and_a_whatsapp_message_from_one_number_are_one_contact(engine: Engine) -> None:
    sms_from(engine, NUMBER)
    deliver(engine, "wa_text")
    with engine.connect() as conn:
        identities = conn.execute(select(Identity.kind, Identity.handle, Identity.contact_id)).all()
        by_channel = dict(
            conn.execute(
                select(Message.channel, Identity.contact_id).join(
                    Identity, Identity.id == Message.identity_id
                )
            ).all()
        )
        contacts = conn.execute(select(func.count()).select_from(Contact)).scalar_one()
        cases = conn.execute(
            select(Case.reference, Case.channel).join(Message, Message.case_id == Case.id)
        ).all()
    assert [(k, h) for k, h, _ in identities] == [("phone", NUMBER)]
    assert contacts == 1
    assert by_channel["sms"] == by_channel["whatsapp"] == identities[0][2]
    # One person, one open case: their WhatsApp message is a follow-up of the SMS case
    # (normalizer/threads.py, "follow-up from the same person").
    assert {reference for reference, _ in cases} == {cases[0][0]} and cases[0][1] == "sms"
    reference = cases[0][0]
    assert reference is not None
    # The case page answers on WhatsApp by default (they last wrote there) and offers SMS.
    user = make_user(engine, "ann")
    page = case_view(engine, Principal(id=user, name="ann", role="agent", via="cli"), reference)
    assert page["default_reply"] == {"channel": "whatsapp", "handle": NUMBER}
    assert {(t["channel"], t["handle"]) for t in page["reply_targets"]} == {
        ("sms", NUMBER),
        ("whatsapp", NUMBER),
    }


def test_another_number_is_another_contact(engine: Engine) -> None:
    sms_from(engine, "+16315550142")
    deliver(engine, "wa_text")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Contact)).scalar_one() == 2


def test_every_message_type_becomes_a_message(engine: Engine) -> None:
    deliver(engine, *MESSAGES)
    with engine.connect() as conn:
        found: dict[str, Any] = {
            row.dedup_key: row for row in conn.execute(select(Message.dedup_key, Message.channel))
        }
        kinds = dict(
            conn.execute(select(Identity.kind, func.count()).group_by(Identity.kind)).all()
        )
    assert len(found) == len(MESSAGES)
    # One WhatsApp number, one PSID (its comment author is another id), two Instagram ids.
    assert kinds == {"phone": 1, "messenger": 2, "instagram": 2}


def test_the_reply_form_says_what_the_window_will_do(engine: Engine) -> None:
    """Before sending: inside the window nothing is said; outside it, the agent reads that a
    template will be sent (WhatsApp) or that Messenger can no longer reach the person."""
    from datetime import timedelta

    from sqlalchemy import update

    from inbox.db import write
    from inbox.models import utcnow

    deliver(engine, "wa_text", "ms_text")
    user = make_user(engine, "ann")
    agent = Principal(id=user, name="ann", role="agent", via="cli")

    def notes() -> dict[str, str]:
        with engine.connect() as conn:
            refs = conn.execute(select(Case.reference, Case.channel)).all()
        found: dict[str, str] = {}
        for reference, _channel in refs:
            assert reference is not None
            found.update(case_view(engine, agent, reference)["reply_notes"])
        return found

    assert notes() == {}
    with write(engine) as conn:
        conn.execute(update(Message).values(received_at=utcnow() - timedelta(days=8)))
    assert notes() == {
        f"whatsapp|{NUMBER}": "outside WhatsApp's 24-hour window: a template will be sent",
        "messenger|7208451234567890": (
            "cannot reach this person on Messenger any more: use another identity"
        ),
    }


def test_whatsapp_is_offered_to_a_number_only_once_it_wrote_there(engine: Engine) -> None:
    """A number that only ever texted is answered by SMS: WhatsApp is neither offered nor
    accepted (a first WhatsApp message would need their opt-in and a template). Once the
    number writes on WhatsApp, a reply asked for on WhatsApp goes out on WhatsApp."""
    import pytest

    from inbox import casework
    from inbox.models import Outbox

    sms_from(engine, NUMBER)
    user = make_user(engine, "ann")
    agent = Principal(id=user, name="ann", role="agent", via="cli")
    with engine.connect() as conn:
        reference = str(conn.execute(select(Case.reference)).scalar_one())
    page = case_view(engine, agent, reference)
    assert page["reply_targets"] == [{"channel": "sms", "handle": NUMBER}]
    assert page["reply_notes"] == {}

    def answer(channel: str) -> dict[str, Any]:
        return casework.reply(
            engine,
            agent,
            reference,
            casework.ReplyRequest(text="We are on it.", channel=channel),
            message_id_domain="support.example.com",
        )

    with pytest.raises(casework.Invalid, match="has never written on whatsapp"):
        answer("whatsapp")
    deliver(engine, "wa_text")
    page = case_view(engine, agent, reference)
    assert {(t["channel"], t["handle"]) for t in page["reply_targets"]} == {
        ("sms", NUMBER),
        ("whatsapp", NUMBER),
    }
    assert answer("whatsapp")["outbox"]["channel"] == "whatsapp"
    assert answer("sms")["outbox"]["channel"] == "sms"
    with engine.connect() as conn:
        replies = conn.execute(
            select(Outbox.channel, Outbox.recipient).where(Outbox.kind == "reply")
        ).all()
    assert sorted(tuple(r) for r in replies) == [("sms", NUMBER), ("whatsapp", NUMBER)]
