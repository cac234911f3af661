"""The satisfaction survey of a contact-form case, on SQLite and PostgreSQL: asked on the
case's status page (the web channel's way out, through the outbox), with the rating link;
nothing is sent to the address the form typed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select, update

from connectors.config import OutboxSettings
from connectors.outbox import OutboxDrainer
from connectors.webform.outbox import StatusPageSender
from inbox import csat
from inbox.models import Case, CsatSurvey, Outbox, utcnow
from tests.channels.webform.support import Site
from tests.channels.webform.test_status_page import conversation, open_case, status_path

SECRET = b"test-csat-secret-0123456789"


async def test_a_form_case_is_asked_on_its_status_page(engine: Engine) -> None:
    async with Site(engine) as site:
        reference, token = await open_case(site)
        with engine.begin() as conn:
            conn.execute(
                update(Case).values(status="resolved", resolved_at=utcnow() - timedelta(hours=2))
            )
        section = csat.CsatSettings(enabled=True, public_url="https://support.example.com")
        [done] = csat.plan_due(engine, section, SECRET)
        assert done["asked"] and done["mode"] == "link"
        drained = OutboxDrainer(engine, StatusPageSender(), OutboxSettings(), worker="t")
        assert drained.drain_once().sent == 2  # the acknowledgement and the survey
        with engine.connect() as conn:
            survey = conn.execute(select(CsatSurvey)).one()
            row = conn.execute(select(Outbox).where(Outbox.kind == "survey")).one()
        assert row.state == "sent" and row.payload["visibility"] == "private"
        status, page, _ = await site.get(status_path(reference, token))
        assert status == 200
        url = csat.survey_url(section.public_url, csat.sign(SECRET, survey.id))
        assert any(who == "ours" and url in text for who, text in conversation(page))
