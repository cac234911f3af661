"""Issue 22 in real headless Chromium, as an agent uses it, keyboard included: the search box
on every page, search filters, bulk actions on the queue, tags and snooze on the case page,
a snoozed case coming back when the customer answers, the customer's history beside the case,
and going on to the next case after resolving. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import Engine, select

from inbox import accounts, casework
from inbox.accounts import Principal
from inbox.models import AuditLog, Case, CaseTag
from tests.support.inbox_helpers import PASSWORD, case_row, email_case, make_user
from tests.test_browser import README_SCREENSHOTS, Server, browser, queue_refs, wait

__all__ = ["browser"]  # the fixture, used by name

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=5)


def login(driver: WebDriver, server: Server, name: str) -> None:
    driver.get(server.url + "/queue")
    wait(driver, lambda d: "/login" in d.current_url)
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait(driver, lambda d: d.current_url == server.url + "/queue")
    wait(driver, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "on")


def press(driver: WebDriver, keys: str) -> None:
    driver.find_element(By.TAG_NAME, "body").send_keys(keys)


def active_id(driver: WebDriver) -> str:
    return str(driver.execute_script("return document.activeElement.id"))


def result_refs(driver: WebDriver) -> list[str]:
    return queue_refs(driver)


def tags_of(engine: Engine, reference: str) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                select(CaseTag.tag).where(CaseTag.case_id == case_row(engine, reference).id)
            ).scalars()
        )


def audited(engine: Engine, reference: str, action: str) -> int:
    with engine.connect() as conn:
        return len(
            conn.execute(
                select(AuditLog.id).where(
                    AuditLog.case_id == case_row(engine, reference).id, AuditLog.action == action
                )
            ).all()
        )


def test_search_bulk_tags_snooze_history_and_flow_in_a_real_browser(
    engine: Engine, browser: WebDriver, tmp_path: Path
) -> None:
    shots = README_SCREENSHOTS if os.environ.get("PARITY_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    ann = make_user(engine, "ann")
    # Kim wrote before: that case is resolved, and shows in the new case's history.
    earlier = email_case(
        engine,
        "kim@example.net",
        "Login trouble",
        "I cannot log in since Monday.",
        at=T0 - timedelta(days=1),
    )
    casework.set_status(engine, Principal(ann, "ann", "agent", "cli"), earlier, "resolved")
    printer = email_case(engine, "lee@example.org", "Printer jam", "My printer jams.", at=T0)
    ink = email_case(
        engine,
        "pat@example.org",
        "Printer ink",
        "The printer ink is empty.",
        at=T0 + timedelta(minutes=20),
    )
    invoice = email_case(
        engine,
        "kim@example.net",
        "Invoice copy",
        "Could you send May's invoice?",
        at=T0 + timedelta(hours=1),
    )
    token = accounts.create_token(engine, "ann", label="browser test")

    with Server(engine) as server:
        driver = browser
        login(driver, server, "ann")
        assert queue_refs(driver) == [printer, ink, invoice]

        # "/" focuses the search box from the queue; Enter searches.
        press(driver, "/")
        assert active_id(driver) == "search-box"
        driver.switch_to.active_element.send_keys("printer", Keys.ENTER)
        wait(driver, lambda d: "/search?q=printer" in d.current_url)
        expected = server.call(token, "GET", "/api/search?q=printer&limit=50")
        assert result_refs(driver) == [r["reference"] for r in expected["results"]]
        assert sorted(result_refs(driver)) == sorted([printer, ink])
        # The filters narrow the same ranking: the status filter by the keyboard-free form.
        driver.find_element(By.ID, "search-tag").send_keys("none-yet", Keys.ENTER)
        wait(driver, lambda d: "tag=none-yet" in d.current_url)
        assert result_refs(driver) == []
        assert "No case matches." in driver.find_element(By.ID, "queue-rows").text

        # Bulk: select two rows with the keyboard (j, x) and the mouse, tag them both.
        driver.get(server.url + "/queue")
        wait(driver, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "on")
        press(driver, "jx")
        driver.find_element(By.CSS_SELECTOR, f"input.pick[value='{ink}']").click()
        assert driver.find_element(By.ID, "bulk-count").text == "2 selected"
        driver.find_element(By.ID, "bulk-tag").send_keys("Hardware")
        driver.find_element(By.ID, "bulk-apply").click()
        wait(
            driver, lambda d: d.find_element(By.ID, "bulk-result").get_attribute("data-done") == "2"
        )
        assert tags_of(engine, printer) == tags_of(engine, ink) == ["hardware"]
        assert tags_of(engine, invoice) == []
        assert [audited(engine, r, "case.tagged") for r in (printer, ink, invoice)] == [1, 1, 0]
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#queue-rows .badge.tag")) == 2)
        driver.save_screenshot(str(shots / "queue-tags.png"))

        # The tag filter of the search page now finds exactly those.
        driver.get(server.url + "/search?" + urllib.parse.urlencode({"tag": "hardware"}))
        assert sorted(result_refs(driver)) == sorted([printer, ink])

        # Case page: a tag by the keyboard (t), then snooze until the customer answers.
        driver.get(f"{server.url}/cases/{invoice}")
        wait(driver, lambda d: d.find_elements(By.ID, "tag-form"))
        press(driver, "t")
        assert active_id(driver) == "tag-input"
        driver.switch_to.active_element.send_keys("Billing", Keys.ENTER)
        wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#tags .badge.tag[data-tag='billing']"),
        )
        assert tags_of(engine, invoice) == ["billing"]
        history = driver.find_element(By.ID, "history").text
        assert "Could you send May's invoice?" in history
        assert earlier in history and "I cannot log in since Monday." in history
        driver.set_window_size(1280, 1500)
        driver.execute_script("document.getElementById('labels').scrollIntoView()")
        driver.save_screenshot(str(shots / "case-history.png"))
        driver.set_window_size(1280, 800)
        driver.find_element(By.ID, "snooze-reply").click()
        wait(driver, lambda d: d.current_url == server.url + "/queue")
        wait(driver, lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "on")
        assert invoice not in queue_refs(driver)
        assert audited(engine, invoice, "case.snoozed") == 1

        # The customer answers: the case is back in the open queue without a reload.
        driver.execute_script("window.notReloaded = true")
        email_case(
            engine,
            "kim@example.net",
            "Re: Invoice copy",
            "Still waiting for it.",
            extra=f"In-Reply-To: <{_first_msgid(engine, invoice)}>\r\n",
            at=datetime.now(UTC),
        )
        wait(driver, lambda d: invoice in queue_refs(d))
        assert driver.execute_script("return window.notReloaded") is True

        # Flow: with "open the next case" on, resolving (e) opens the next case.
        driver.find_element(By.ID, "after-next").click()
        wait(driver, lambda d: "next case" in d.find_element(By.ID, "notice").text)
        driver.get(f"{server.url}/cases/{printer}")
        wait(
            driver,
            lambda d: d.find_element(By.ID, "case").get_attribute("data-after-done") == "next",
        )
        press(driver, "e")
        wait(driver, lambda d: d.current_url == f"{server.url}/cases/{ink}")
        assert case_row(engine, printer).status == "resolved"
        wait(driver, lambda d: "Held by you" in d.find_element(By.ID, "lease").text)


def _first_msgid(engine: Engine, reference: str) -> str:
    from inbox.models import Message

    with engine.connect() as conn:
        value = conn.execute(
            select(Message.external_id)
            .join(Case, Case.id == Message.case_id)
            .where(Case.reference == reference, Message.direction == "inbound")
            .order_by(Message.id)
        ).first()
    assert value is not None
    return str(value[0]).strip("<>")
