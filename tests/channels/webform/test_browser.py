"""The form and the status page in real headless Chromium, with and without JavaScript, on
SQLite and PostgreSQL, and axe-core's accessibility rules over each page: any serious or
critical violation fails.

Missing chromium, chromedriver or axe-core is a failure, not a skip: `scripts/bootstrap
--test` installs them (axe-core from the npm registry, pinned in tests/axe/).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine, select

from connectors.webform.web import WebForm
from inbox.models import Case, Message
from inbox.secrets import Secret
from inbox.web import create_app
from inbox.web.config import InboxSettings
from normalizer.intake import IntakeWriter
from tests.channels.webform.support import PNG, SECRET, settings
from tests.support.browser import chromium as browser_of
from tests.support.fake_server import served_in_thread
from tests.support.helpers import normalize

AXE = Path(__file__).resolve().parents[2] / "axe" / "node_modules" / "axe-core" / "axe.min.js"
# The docs' screenshots are refreshed only when asked (PARITY_SCREENSHOTS=1), as in
# tests/test_browser.py; otherwise they go to a scratch folder.
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[3] / "docs" / "screenshots"
BLOCKING = ("serious", "critical")


class Server:
    """The inbox app with the form's routes on 127.0.0.1:<ephemeral>, in its own loop."""

    def __init__(self, engine: Engine, **section: Any) -> None:
        self.engine = engine
        self.section = settings(public_url="http://127.0.0.1", wait_seconds=0.5, **section)
        self.url = ""
        self.writer = IntakeWriter(engine)
        self._served = served_in_thread(self._app, shutdown_timeout=1)

    def _app(self) -> web.Application:
        form = WebForm(self.section, self.engine, Secret(SECRET), self.writer.submit)
        return create_app(self.engine, InboxSettings(), routes=form.routes())

    def __enter__(self) -> Server:
        self.url = self._served.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._served.__exit__(None, None, None)
        self.writer.stop()


def chromium(javascript: bool) -> WebDriver:
    return browser_of(javascript=javascript, width=1100)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    driver = chromium(javascript=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def no_script_browser() -> Iterator[WebDriver]:
    driver = chromium(javascript=False)
    try:
        yield driver
    finally:
        driver.quit()


def axe_violations(driver: WebDriver) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page now shown."""
    assert AXE.exists(), f"{AXE} is missing: run ./scripts/bootstrap --test"
    driver.execute_script(AXE.read_text())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations)).catch(e => done([{impact: 'critical', id: String(e)}]));"
    )
    return [v for v in result if v.get("impact") in BLOCKING]


def assert_accessible(driver: WebDriver) -> None:
    found = axe_violations(driver)
    assert not found, [(v["id"], v.get("help"), len(v.get("nodes", []))) for v in found]


def until(driver: WebDriver, condition: Any, timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, 0.1).until(condition)


def fill(driver: WebDriver, text: str, attachment: Path | None = None) -> None:
    driver.find_element(By.ID, "name").send_keys("Ana Lima")
    driver.find_element(By.ID, "email").send_keys("ana@example.org")
    driver.find_element(By.ID, "text").send_keys(text)
    if attachment is not None:
        driver.find_element(By.ID, "files").send_keys(str(attachment))


def work_of(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [m["web"]["work"] for m in conn.execute(select(Message.meta)).scalars()]


def test_with_javascript_the_work_is_done_in_the_page_and_every_page_is_accessible(
    engine: Engine, browser: WebDriver, tmp_path: Path
) -> None:
    shot = tmp_path / "error.png"
    shot.write_bytes(PNG)
    shots = DOCS_SCREENSHOTS if os.environ.get("PARITY_SCREENSHOTS") == "1" else tmp_path
    with Server(engine, pow_bits=12, pow_max_bits=12) as server:
        browser.get(server.url + "/contact")
        assert_accessible(browser)
        browser.save_screenshot(str(shots / "contact.png"))
        # A first try with the address missing: errors tied to their fields, still accessible.
        browser.find_element(By.ID, "name").send_keys("Ana Lima")
        browser.find_element(By.ID, "text").send_keys("x")
        browser.find_element(By.ID, "send").click()
        until(browser, lambda d: d.find_elements(By.ID, "email-error"))
        email = browser.find_element(By.ID, "email")
        assert "email-error" in str(email.get_attribute("aria-describedby"))
        assert email.get_attribute("aria-invalid") == "true"
        assert_accessible(browser)
        # Then by keyboard alone: type, Tab through, Enter on the button.
        browser.find_element(By.ID, "email").send_keys("ana@example.org")
        text = browser.find_element(By.ID, "text")
        text.clear()
        text.send_keys("My account was taken over and my phone number closed.")
        browser.find_element(By.ID, "files").send_keys(str(shot))
        browser.find_element(By.ID, "send").send_keys(Keys.ENTER)
        until(browser, lambda d: "/contact/received/" in d.current_url)
        normalize(engine)
        # The answer page shows the reference once the case exists (it refreshes itself).
        until(browser, lambda d: d.find_elements(By.ID, "reference"))
        with engine.connect() as conn:
            reference = str(conn.execute(select(Case.reference)).scalar_one())
        assert reference in browser.find_element(By.ID, "reference").text
        assert "A person will answer" in browser.find_element(By.ID, "eta").text
        assert_accessible(browser)
        assert work_of(engine) == ["js"]
        # The link names the public URL (a proxy's, here a port-less one): follow its path.
        link = urlsplit(browser.find_element(By.ID, "status-link").get_attribute("href") or "")
        assert link.path == f"/status/{reference}"
        browser.get(f"{server.url}{link.path}?{link.query}")
        until(browser, lambda d: d.find_elements(By.ID, "state"))
        assert browser.find_element(By.ID, "state").text == "Received"
        assert "My account was taken over" in browser.find_element(By.ID, "conversation").text
        assert "error.png" in browser.find_element(By.ID, "conversation").text
        assert_accessible(browser)
        browser.find_element(By.ID, "text").send_keys("A second screenshot is coming.")
        browser.find_element(By.ID, "add-send").click()
        until(browser, lambda d: "added=1" in d.current_url)
        normalize(engine)
        browser.refresh()
        until(
            browser, lambda d: "A second screenshot" in d.find_element(By.ID, "conversation").text
        )
        browser.save_screenshot(str(shots / "status.png"))
    with engine.connect() as conn:
        assert len(set(conn.execute(select(Message.case_id)).scalars())) == 1


def test_without_javascript_the_form_still_works(
    engine: Engine, no_script_browser: WebDriver
) -> None:
    driver = no_script_browser
    with Server(engine, nojs_min_fill_seconds=1) as server:
        driver.get(server.url + "/contact")
        # Scripts really are off: the page's script would have set the progress text.
        assert driver.find_element(By.ID, "work").get_attribute("value") == ""
        fill(driver, "No JavaScript here, and I cannot log in.")
        time.sleep(1.2)  # a person takes longer than nojs_min_fill_seconds
        driver.find_element(By.ID, "send").click()
        until(driver, lambda d: "/contact/received/" in d.current_url)
        normalize(engine)
        # A meta refresh, not a script, brings the reference.
        until(driver, lambda d: d.find_elements(By.ID, "reference"), timeout=20)
        with engine.connect() as conn:
            reference = str(conn.execute(select(Case.reference)).scalar_one())
        assert reference in driver.find_element(By.ID, "reference").text
    assert work_of(engine) == ["nojs"]
