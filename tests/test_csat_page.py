"""The public rating page (issue 23), on SQLite and PostgreSQL: in real headless Chromium a
customer rates with one click, adds a comment and opts out; over HTTP the page refuses a
forged token, keeps its CSP, changes nothing on GET, and rate-limits POSTs per address."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine, select, update

from inbox import csat
from inbox.models import Case, Contact, CsatSurvey, utcnow
from inbox.web import create_app, csat_page
from parity.daemon import csat_limiter
from tests.support.browser import chromium
from tests.support.fake_server import served_in_thread
from tests.support.inbox_helpers import email_case

SECRET = b"test-csat-secret-0123456789"


def settings(**kw: Any) -> csat.CsatSettings:
    return csat.CsatSettings(enabled=True, public_url="https://support.example.com", **kw)


def app_for(engine: Engine, section: csat.CsatSettings) -> web.Application:
    app = create_app(engine)
    csat_page.install(app, engine, section, SECRET, csat_limiter(engine, section))
    return app


def asked(engine: Engine, section: csat.CsatSettings) -> tuple[int, str]:
    """A resolved email case asked by link: its survey id and token."""
    reference = email_case(engine, "rita@example.org", "Where is my parcel?")
    with engine.begin() as conn:
        conn.execute(
            update(Case)
            .where(Case.reference == reference)
            .values(status="resolved", resolved_at=utcnow() - timedelta(hours=2))
        )
    [done] = csat.plan_due(engine, section, SECRET)
    assert done["asked"]
    with engine.connect() as conn:
        survey_id = conn.execute(select(CsatSurvey.id)).scalar_one()
    return survey_id, csat.sign(SECRET, survey_id)


def survey(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(CsatSurvey)).one()


def shown(browser: Any, element_id: str) -> Any:
    """The element once the page a click loaded shows it."""
    return WebDriverWait(browser, 10).until(
        expected_conditions.visibility_of_element_located((By.ID, element_id))
    )


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium(javascript=False, width=390)
    try:
        yield driver
    finally:
        driver.quit()


def test_one_click_rates_then_a_comment_then_the_opt_out(engine: Engine, browser: Any) -> None:
    section = settings()
    _, token = asked(engine, section)
    with served_in_thread(lambda: app_for(engine, section), shutdown_timeout=1) as base:
        browser.get(f"{base}/csat/{token}")
        assert "How did we do?" in browser.title
        assert "C-000001" in browser.find_element(By.ID, "question").text
        # Opening the page records nothing (mail scanners open links too).
        assert survey(engine).rating is None
        browser.find_element(By.ID, "rate-4").click()
        assert "Your rating: 4 of 5" in shown(browser, "message").text
        assert survey(engine).rating == 4
        # No horizontal scroll on a phone.
        width, view = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert width <= view
        browser.find_element(By.ID, "comment").send_keys("Fast, thank you.")
        browser.find_element(By.ID, "send-comment").click()
        assert shown(browser, "comment-thanks").is_displayed()
        answered = survey(engine)
        assert (answered.rating, answered.comment, answered.state) == (
            4,
            "Fast, thank you.",
            "answered",
        )
        browser.find_element(By.ID, "opt-out").click()
        WebDriverWait(browser, 10).until(
            expected_conditions.text_to_be_present_in_element(
                (By.ID, "message"), "not be asked again"
            )
        )
        with engine.connect() as conn:
            assert conn.execute(select(Contact.csat_opt_out_at)).scalar_one() is not None


async def test_forged_tokens_csp_and_the_rate_limit(engine: Engine) -> None:
    section = settings(page_per_address_burst=3, page_per_address_per_hour=1)
    survey_id, token = asked(engine, section)
    client: TestClient[Any, Any] = TestClient(TestServer(app_for(engine, section)))
    await client.start_server()
    try:
        page = await client.get(f"/csat/{token}")
        assert page.status == 200
        csp = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp
        assert "frame-ancestors 'none'" in csp
        for forged in (csat.sign(b"guess", survey_id), f"{survey_id}-x", "1", "../admin"):
            assert (await client.get(f"/csat/{forged}")).status == 404
        assert (await client.post(f"/csat/{token}", data={"rating": "9"})).status == 400
        assert (await client.post(f"/csat/{token}", data={"rating": "2"})).status == 200
        # The burst of 3 is spent (the bad rating took one too): refused, nothing written.
        assert (await client.post(f"/csat/{token}", data={"rating": "5"})).status == 200
        refused = await client.post(f"/csat/{token}", data={"rating": "1"})
        assert refused.status == 429
        assert survey(engine).rating == 5
    finally:
        await client.close()
