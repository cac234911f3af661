"""The agent pages in real headless Chromium (Debian's chromium and chromedriver), against a
real aiohttp server on an ephemeral port, on SQLite and PostgreSQL.

Missing chromium or chromedriver is a failure, not a skip: `scripts/bootstrap --test`
installs them. The test also takes the README's screenshots (docs/screenshots/).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine

from inbox import accounts
from inbox.web import create_app
from inbox.web.config import InboxSettings
from tests.support.browser import chromium
from tests.support.fake_server import served_in_thread
from tests.support.inbox_helpers import DOMAIN, PASSWORD, email_case, make_user

# The README's screenshots are refreshed only when asked (PARITY_SCREENSHOTS=1), so a test
# run leaves the committed pictures alone; otherwise they go to a scratch folder.
README_SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)

# Each payload would set the top page's or the frame's title, or a global, if it ran.
HTML_MAIL = (
    "<h2>Where is my order?</h2><p>Order <b>#4471</b> was due on Monday.</p>"
    "<script>document.title='pwned-script';window.pwned=1;</script>"
    '<img src="x" onerror="document.title=\'pwned-onerror\';window.pwned=2">'
    '<img src="https://tracker.example/open.gif">'
    "<p><a href=\"javascript:document.title='pwned-js'\">see my order</a></p>"
    "<div onmouseover=\"document.title='pwned-hover'\">Thanks, Lee</div>"
)


class Server:
    """The inbox app on 127.0.0.1:<ephemeral> in its own thread and event loop."""

    def __init__(self, engine: Engine, settings: InboxSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or InboxSettings()
        self.url = ""
        self._served = served_in_thread(self._app, shutdown_timeout=1)

    def _app(self) -> web.Application:
        return create_app(self.engine, self.settings, message_id_domain=DOMAIN)

    def __enter__(self) -> Server:
        self.url = self._served.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._served.__exit__(None, None, None)

    def call(self, token: str, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Any, timeout: float = 30) -> Any:
    # Pages reload after actions: an element can vanish between finding and reading it.
    ignored = (NoSuchElementException, StaleElementReferenceException)

    def settled(d: WebDriver) -> Any:
        try:
            return condition(d)
        except WebDriverException as exc:
            # Chromium reports the same race, a node read just after its page went away, as
            # a bare inspector error rather than a stale element: look again.
            if "does not belong to the document" in str(exc):
                return False
            raise

    return WebDriverWait(driver, timeout, 0.1, ignored_exceptions=ignored).until(settled)


def queue_refs(driver: WebDriver) -> list[str]:
    return [
        row.get_attribute("data-reference") or ""
        for row in driver.find_elements(By.CSS_SELECTOR, "#queue-rows tr[data-reference]")
    ]


def test_an_agent_works_the_queue_in_a_real_browser(
    engine: Engine, browser: WebDriver, tmp_path: Path
) -> None:
    shots = README_SCREENSHOTS if os.environ.get("PARITY_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    make_user(engine, "ann")
    make_user(engine, "bo")
    html = "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
    # The HTML mail is the oldest, so it is the top of the queue and claim-next takes it.
    rich = email_case(engine, "lee@example.org", "Where is my order?", HTML_MAIL, extra=html, at=T0)
    other = email_case(
        engine,
        "pat@example.org",
        "Card declined",
        "It failed again.\r\n\r\nOn Mon, 2 Mar 2026, Help <help@x.example> wrote:\r\n> retry",
        at=T0 + timedelta(minutes=20),
    )
    third = email_case(
        engine,
        "kim@example.net",
        "Invoice copy",
        "Could you send May's invoice?",
        at=T0 + timedelta(hours=1),
    )
    bo = accounts.create_token(engine, "bo", label="browser test")

    with Server(engine) as server:
        driver = browser
        # Logs in: the queue sends an anonymous visitor to the login page and back.
        driver.get(server.url + "/queue")
        wait(driver, lambda d: "/login" in d.current_url)
        driver.find_element(By.ID, "name").send_keys("ann")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        wait(driver, lambda d: d.current_url == server.url + "/queue")
        wait(driver, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "on")
        assert queue_refs(driver) == [rich, other, third]
        driver.save_screenshot(str(shots / "queue.png"))

        # Claims a case: claim-next leases the top case and opens it.
        driver.find_element(By.ID, "claim-next").click()
        wait(driver, lambda d: d.current_url.endswith(f"/cases/{rich}"))
        wait(driver, lambda d: "Held by you" in d.find_element(By.ID, "lease").text)

        # The HTML mail renders, and none of its payloads runs.
        frame = driver.find_element(By.CSS_SELECTOR, "iframe.mail")
        assert frame.get_attribute("sandbox") == ""
        driver.switch_to.frame(frame)
        wait(driver, lambda d: "#4471" in d.find_element(By.TAG_NAME, "body").text)
        link = driver.find_element(By.XPATH, "//a[contains(., 'see my order')]")
        assert link.get_attribute("href") in (None, "")
        link.click()
        inside = driver.execute_script("return [document.title, typeof window.pwned]")
        assert inside == ["mail", "undefined"]
        assert not driver.find_elements(By.TAG_NAME, "script")
        images = driver.find_elements(By.TAG_NAME, "img")
        assert all("tracker.example" not in (i.get_attribute("src") or "") for i in images)
        driver.switch_to.default_content()
        top = driver.execute_script("return [document.title, typeof window.pwned]")
        assert top[0].startswith(rich) and top[1] == "undefined"

        # Replies, and sees the reply in the outbox.
        driver.execute_script("window.beforeReply = true")
        driver.find_element(By.ID, "reply-text").send_keys("Your order ships today.")
        driver.find_element(By.CSS_SELECTOR, "#reply button[type=submit]").click()
        # The page reloads after the reply is queued.
        wait(driver, lambda d: d.execute_script("return window.beforeReply") is None)
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#outbox li[data-outbox]"))
        outbox = driver.find_element(By.ID, "outbox").text
        assert "lee@example.org" in outbox and "queued" in outbox
        assert "Your order ships today." in driver.find_element(By.CSS_SELECTOR, ".timeline").text
        driver.save_screenshot(str(shots / "case.png"))

        # A case claimed by another agent disappears from the queue without a reload.
        driver.get(server.url + "/queue")
        wait(driver, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "on")
        assert other in queue_refs(driver)
        driver.execute_script("window.notReloaded = true")
        server.call(bo, "POST", f"/api/cases/{other}/claim", {})
        wait(driver, lambda d: other not in queue_refs(d))
        assert driver.execute_script("return window.notReloaded") is True
        assert third in queue_refs(driver)

        # Phone width: the queue becomes stacked cards, no sideways scrolling.
        driver.set_window_size(390, 844)
        header = driver.find_element(By.CSS_SELECTOR, "table.queue thead")
        assert header.value_of_css_property("display") == "none"
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )


# Issue 11's sample: the same complaint pasted from another address with small edits.
COMPLAINT = (
    "I have been locked out of my account since yesterday evening. Every time I try to log in "
    "it says my password is wrong, and the reset email never arrives in my inbox or spam "
    "folder. I need to get into my account today because my invoices are in there."
)
EDITED = COMPLAINT.replace("yesterday evening", "yesterday night").replace("invoices", "bills")


def timeline(driver: WebDriver) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, ".timeline").text)


def flash_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "flash").text)


def test_an_agent_merges_undoes_and_links_from_the_case_page(
    engine: Engine, browser: WebDriver
) -> None:
    make_user(engine, "ann")
    home = email_case(engine, "alice@example.com", "Locked out", COMPLAINT, at=T0)
    work = email_case(
        engine, "alice.w@work.example", "Account locked", EDITED, at=T0 + timedelta(hours=1)
    )

    with Server(engine) as server:
        driver = browser
        driver.get(f"{server.url}/cases/{work}")
        wait(driver, lambda d: "/login" in d.current_url)
        driver.find_element(By.ID, "name").send_keys("ann")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        wait(driver, lambda d: d.current_url == f"{server.url}/cases/{work}")
        assert "yesterday night" in timeline(driver)

        # The suggestion only fills in the target; the agent reviews, then confirms.
        driver.find_element(By.CSS_SELECTOR, f"button.prefill-merge[data-into='{home}']").click()
        assert driver.find_element(By.ID, "merge-into").get_attribute("value") == home
        assert driver.current_url == f"{server.url}/cases/{work}"
        driver.find_element(By.ID, "merge-review").click()
        wait(driver, lambda d: d.find_elements(By.ID, "merge-confirm"))
        source = driver.find_element(By.ID, "merge-source").text
        into = driver.find_element(By.ID, "merge-target").text
        assert work in source and "alice.w@work.example" in source and "Account locked" in source
        assert home in into and "alice@example.com" in into and "Locked out" in into
        assert driver.find_element(By.CSS_SELECTOR, "#merge-source .count").text == "1"
        driver.find_element(By.ID, "merge-confirm-button").click()

        # The survivor shows both people's messages.
        wait(driver, lambda d: d.current_url == f"{server.url}/cases/{home}")
        assert f"{work} was merged into {home}" in flash_text(driver)
        both = timeline(driver)
        assert "yesterday evening" in both and "yesterday night" in both

        # Undo from the survivor's merge list: both cases as they were.
        driver.find_element(By.CSS_SELECTOR, "#merges button.undo-merge").click()
        wait(driver, lambda d: "undone" in flash_text(d))
        assert "yesterday night" not in timeline(driver)
        assert "yesterday evening" in timeline(driver)
        assert not driver.find_elements(By.CSS_SELECTOR, "#merges button.undo-merge")
        driver.get(f"{server.url}/cases/{work}")
        assert "yesterday night" in timeline(driver) and "yesterday evening" not in timeline(driver)
        assert not driver.find_elements(By.ID, "merged-into")

        # Link the work address to the home case's contact, then unlink it.
        driver.get(f"{server.url}/cases/{home}")
        driver.find_element(By.CSS_SELECTOR, "#link-channel option[value='email']").click()
        driver.find_element(By.ID, "link-handle").send_keys("alice.w@work.example")
        driver.find_element(By.ID, "link-submit").click()
        wait(driver, lambda d: "Linked email: alice.w@work.example" in flash_text(d))
        item = "#identities li[data-identity='email:alice.w@work.example']"
        assert "not verified" in driver.find_element(By.CSS_SELECTOR, item).text
        driver.find_element(By.CSS_SELECTOR, f"{item} button.unlink").click()
        wait(driver, lambda d: "Unlinked email: alice.w@work.example" in flash_text(d))
        assert not driver.find_elements(By.CSS_SELECTOR, item)
        assert driver.find_elements(
            By.CSS_SELECTOR, "#identities li[data-identity='email:alice@example.com']"
        )
