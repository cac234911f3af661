"""The reply form as an agent uses it (issue 22), in real headless Chromium against the real
app on SQLite and PostgreSQL: a canned reply inserted with "#" and the keyboard, a new CC
address marked, files attached, the draft back after a reload, files refused with the
reason on a channel that takes none, the reply sent and shown as not received while mail
has no way out; times in the browser's zone; an inbound image previewed inline.

Takes docs/screenshots/reply.png when PARITY_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import pytest
from aiohttp import web
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from sqlalchemy import Engine, select

from inbox import replykit
from inbox.accounts import Principal
from inbox.delivery import WayOut
from inbox.models import Attachment, Case, Message, Outbox
from inbox.web import create_app
from inbox.web.config import InboxSettings
from tests.support.browser import chromium
from tests.support.fake_server import served_in_thread
from tests.support.helpers import ingest_and_normalize
from tests.support.inbox_helpers import DOMAIN, PASSWORD, link_identity, make_user
from tests.test_browser import README_SCREENSHOTS, wait
from tests.test_reply_compose import PNG


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


NO_RELAY = WayOut("email", "none", "no relay configured ([outbox.email] host)", takes_in=True)


def picture(width: int = 160, height: int = 90) -> bytes:
    """A real PNG (a blue-to-green gradient), written with zlib: what a phone photo is to
    the preview, in a few hundred bytes."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (30, 60 + x, 200 - y))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _mail_with_image(at: datetime) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Lee Park <lee@example.org>"
    msg["To"] = "help@support.example.com"
    msg["Subject"] = "Broken screen"
    msg["Message-ID"] = "<screen-1@example.org>"
    msg["Date"] = format_datetime(at)
    msg.set_content("The screen cracked, photo attached.")
    msg.add_attachment(picture(), maintype="image", subtype="png", filename="screen.png")
    # Claims to be an image, is HTML: never previewed.
    msg.add_attachment(
        b"<html><script>alert(1)</script></html>",
        maintype="image",
        subtype="png",
        filename="fake.png",
    )
    return msg.as_bytes()


def test_an_agent_writes_a_reply_with_canned_text_copies_and_files(
    engine: Engine, browser: WebDriver, tmp_path: Path
) -> None:
    shots = README_SCREENSHOTS if os.environ.get("PARITY_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    make_user(engine, "ann")
    mia = make_user(engine, "mia", "manager")
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    outcome = ingest_and_normalize(engine, _mail_with_image(at), received_at=at)
    with engine.connect() as conn:
        ref = str(
            conn.execute(select(Case.reference).where(Case.id == outcome.case_id)).scalar_one()
        )
    link_identity(engine, ref, "reddit", "lee_r")
    replykit.create_canned(
        engine,
        Principal(id=mia, name="mia", role="manager", via="cli"),
        title="Password reset",
        body="Hello {contact.name}, your case {case.reference} is done. {agent.name}",
        variants={},
        personal=False,
    )
    doc = tmp_path / "invoice.txt"
    doc.write_bytes(b"Invoice 4471: 12.00 EUR\n")
    photo = tmp_path / "label.png"
    photo.write_bytes(PNG)

    def app() -> web.Application:
        return create_app(engine, InboxSettings(), message_id_domain=DOMAIN, ways_out=[NO_RELAY])

    with served_in_thread(app, shutdown_timeout=1) as url:
        driver = browser
        driver.get(url + "/login")
        driver.find_element(By.ID, "name").send_keys("ann")
        driver.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)
        wait(driver, lambda d: d.current_url.endswith("/queue"))
        # Honest delivery: the banner is on every page.
        assert "Nothing goes out on email" in driver.find_element(By.ID, "delivery-banner").text

        driver.get(f"{url}/cases/{ref}")
        wait(driver, lambda d: d.find_element(By.ID, "reply-fit").text)
        # Times read in the browser's zone, relative where near, exact on hover.
        stamp = driver.find_element(By.CSS_SELECTOR, "article.inbound time[datetime]")
        assert stamp.text in ("5 min. ago", "5 minutes ago", "4 min. ago", "6 min. ago")
        assert stamp.get_attribute("title")
        # The real image is previewed inline; the fake one (HTML named .png) is not shown.
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "img.preview")) == 1)
        (preview,) = driver.find_elements(By.CSS_SELECTOR, "img.preview")
        assert driver.execute_script("return arguments[0].naturalWidth", preview) == 160
        assert preview.get_attribute("alt") == "screen.png"

        # "r" focuses the reply; "#" and a few letters open the picker; Enter inserts.
        driver.find_element(By.TAG_NAME, "body").send_keys("r")
        text = driver.switch_to.active_element
        assert text.get_attribute("id") == "reply-text"
        text.send_keys("#pass")
        wait(driver, lambda d: d.find_element(By.ID, "canned-picker").is_displayed())
        assert "Password reset" in driver.find_element(By.ID, "canned-picker").text
        text.send_keys(Keys.ENTER)
        wait(
            driver,
            lambda d: (
                "Hello Lee Park" in d.find_element(By.ID, "reply-text").get_attribute("value")
            ),
        )
        assert text.get_attribute("value") == f"Hello Lee Park, your case {ref} is done. ann"
        # Edited before sending, in Markdown.
        text.send_keys(Keys.END, "\n\n**Label** attached.")

        cc = driver.find_element(By.ID, "reply-cc")
        cc.send_keys("new@example.com")
        wait(driver, lambda d: "new@example.com" in d.find_element(By.ID, "copy-new").text)
        files = driver.find_element(By.ID, "reply-files")
        files.send_keys(f"{doc}\n{photo}")
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#reply-file-list li")) == 2)
        wait(driver, lambda d: d.find_element(By.ID, "draft-state").text == "Draft saved.")
        driver.set_window_size(1280, 1300)
        driver.save_screenshot(str(shots / "reply.png"))
        driver.set_window_size(1280, 900)

        # The draft is on the server: a reload brings it all back.
        driver.refresh()
        wait(
            driver, lambda d: "Label" in d.find_element(By.ID, "reply-text").get_attribute("value")
        )
        assert driver.find_element(By.ID, "reply-cc").get_attribute("value") == "new@example.com"
        names = driver.find_element(By.ID, "reply-file-list").text
        assert "invoice.txt" in names and "label.png" in names

        # On Reddit files cannot go: the form says why before anything is sent.
        target = Select(driver.find_element(By.ID, "reply-target"))
        target.select_by_value("reddit|lee_r")
        refused = driver.find_element(By.ID, "files-refused")
        wait(driver, lambda d: refused.is_displayed())
        assert "reddit cannot carry files" in refused.text
        assert not driver.find_element(By.ID, "reply-copies").is_displayed()
        target.select_by_value("email|lee@example.org")

        driver.execute_script("window.beforeReply = true")
        driver.find_element(By.CSS_SELECTOR, "#reply button[type=submit]").click()
        wait(driver, lambda d: d.execute_script("return window.beforeReply") is None)
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "article.outbound"))
        outbound = driver.find_element(By.CSS_SELECTOR, "article.outbound")
        assert "The customer has NOT received this" in outbound.text
        assert "invoice.txt" in outbound.text and "label.png" in outbound.text
        assert "CC: new@example.com" in outbound.text
        # The draft went with the reply.
        assert driver.find_element(By.ID, "reply-text").get_attribute("value") == ""

    with engine.connect() as conn:
        row = conn.execute(select(Outbox).where(Outbox.kind == "reply")).one()
        message = conn.execute(select(Message).where(Message.direction == "outbound")).one()
        attached = conn.execute(
            select(Attachment.filename).where(Attachment.message_id == message.id)
        ).scalars()
        assert sorted(attached) == ["invoice.txt", "label.png"]
    assert row.payload["cc"] == ["new@example.com"]
    assert "<strong>Label</strong>" in row.payload["html"]


def test_a_manager_keeps_canned_replies_on_their_page(engine: Engine, browser: WebDriver) -> None:
    make_user(engine, "mia", "manager")
    make_user(engine, "ann")

    def app() -> web.Application:
        return create_app(engine, InboxSettings(), message_id_domain=DOMAIN)

    with served_in_thread(app, shutdown_timeout=1) as url:
        driver = browser
        driver.get(url + "/login")
        driver.find_element(By.ID, "name").send_keys("mia")
        driver.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)
        wait(driver, lambda d: d.current_url.endswith("/queue"))
        driver.find_element(By.LINK_TEXT, "Canned replies").click()
        wait(driver, lambda d: d.current_url.endswith("/canned"))
        driver.find_element(By.ID, "canned-title").send_keys("Shipping delay")
        driver.find_element(By.ID, "canned-body").send_keys(
            "Hello {contact.name}, your parcel is late; we answer {eta}."
        )
        post = driver.find_element(By.CSS_SELECTOR, 'textarea[data-channel="twitter"]')
        post.send_keys("x" * 281)
        driver.find_element(By.ID, "canned-save").click()
        error = driver.find_element(By.ID, "canned-error")
        wait(driver, lambda d: error.is_displayed())
        assert error.text == (
            "the twitter variant is too long: 281 characters: twitter takes at most 280"
        )
        post.send_keys(Keys.BACKSPACE)
        driver.find_element(By.ID, "canned-save").click()
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#canned-list tr[data-canned]"))
        row = driver.find_element(By.CSS_SELECTOR, "#canned-list tr[data-canned]")
        assert "Shipping delay" in row.text and "shared" in row.text

        # An agent sees it, cannot change it, and makes only personal ones.
        driver.find_element(By.ID, "logout").click()
        wait(driver, lambda d: "/login" in d.current_url)
        driver.find_element(By.ID, "name").send_keys("ann")
        driver.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)
        wait(driver, lambda d: d.current_url.endswith("/queue"))
        driver.get(url + "/canned")
        row = driver.find_element(By.CSS_SELECTOR, "#canned-list tr[data-canned]")
        assert "Shipping delay" in row.text
        assert not row.find_elements(By.CSS_SELECTOR, "button.edit-canned")
        personal = driver.find_element(By.ID, "canned-personal")
        assert personal.is_selected() and not personal.is_enabled()
