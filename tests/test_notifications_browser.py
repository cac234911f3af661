"""Issue 22, notifications in real headless Chromium, on SQLite and PostgreSQL: the bell's
unread count, permission asked only on a click (granted through the DevTools protocol), a
browser notification fired when a case is assigned while the page is open (window.Notification
wrapped by the test to see the call), the list with mark read, and the settings form.

Everything reaches the page on the agent's live stream: the fallback poll is set to a day, and
the page is checked to have asked GET /api/notifications not once."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import Engine, select

from inbox import casework, notifications
from inbox.accounts import Principal
from inbox.models import Notification
from inbox.web.config import InboxSettings
from tests.support.inbox_helpers import email_case, make_user
from tests.test_agent_day_browser import login
from tests.test_browser import Server, browser, wait

__all__ = ["browser"]  # the fixture, used by name

# Runs before any page script: records each `new Notification(...)` and each permission
# request, and otherwise behaves as the browser's own (the permission is the real one).
WRAP_NOTIFICATION = """
(() => {
  const Real = window.Notification;
  window.__notified = [];
  window.__asked = 0;
  class Recorded extends Real {
    constructor(title, options) {
      window.__notified.push({ title, body: options && options.body, tag: options && options.tag });
      super(title, options);
    }
  }
  Recorded.requestPermission = (...args) => {
    window.__asked += 1;
    return Real.requestPermission(...args);
  };
  window.Notification = Recorded;
})();
"""


def bell(driver: WebDriver) -> str:
    node = driver.find_element(By.ID, "bell-count")
    return "" if node.get_attribute("hidden") is not None else node.text


def recorded(driver: WebDriver) -> Any:
    return driver.execute_script("return [window.__notified, window.__asked]")


def polls(driver: WebDriver) -> list[str]:
    """The page's own requests for GET /api/notifications (the fallback poll), if any."""
    return list(
        driver.execute_script(
            "return performance.getEntriesByType('resource').map((e) => e.name)"
            ".filter((n) => n.includes('/api/notifications?'))"
        )
    )


def live(driver: WebDriver) -> bool:
    return driver.find_element(By.ID, "bell").get_attribute("data-live") == "on"


# A day: within the test, only the live stream can bring anything.
NO_POLL = InboxSettings(notify_fallback_poll_seconds=24 * 3600)


def test_the_bell_and_a_browser_notification_in_a_real_browser(
    engine: Engine, browser: WebDriver
) -> None:
    ann = make_user(engine, "ann")
    mia = Principal(make_user(engine, "mia", "manager"), "mia", "manager", "cli")
    first = email_case(engine, "kim@example.org", "Refund", "Where is my refund?")
    second = email_case(engine, "lee@example.org", "Printer", "My printer jams.")
    driver = browser
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WRAP_NOTIFICATION})

    with Server(engine, NO_POLL) as server:
        login(driver, server, "ann")
        wait(driver, live)
        assert bell(driver) == ""  # nothing unread: no number
        driver.get(server.url + "/notifications")
        wait(driver, lambda d: d.find_element(By.ID, "notify-permission-state").text != "")
        # Opening the page asks nothing; the click does.
        assert recorded(driver) == [[], 0]
        driver.execute_cdp_cmd(
            "Browser.grantPermissions", {"origin": server.url, "permissions": ["notifications"]}
        )
        driver.find_element(By.ID, "notify-permission").click()
        wait(driver, lambda d: d.find_element(By.ID, "notify-permission-state").text == "Allowed.")
        assert recorded(driver)[1] == 1

        # A manager assigns a case to Ann while her page is open: the bell and the browser,
        # from the stream (the page never polled).
        wait(driver, live)
        casework.assign(engine, mia, first, "ann")
        wait(driver, lambda d: bell(d) == "1")
        notified, _ = wait(driver, lambda d: recorded(d) if recorded(d)[0] else None)
        assert [(n["title"], n["body"]) for n in notified] == [
            ("Parity", f"Assigned to you: {first} Refund")
        ]
        assert polls(driver) == []

        # A reload shows it in the list and fires nothing again (it is not news).
        driver.refresh()
        item = wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".notify-item.unread"))
        assert item.find_element(By.TAG_NAME, "a").get_attribute("href").endswith(f"/cases/{first}")
        wait(driver, lambda d: bell(d) == "1")
        casework.assign(engine, mia, second, "ann")
        wait(driver, lambda d: bell(d) == "2")
        notified = wait(driver, lambda d: recorded(d)[0] or None)
        assert [n["body"] for n in notified] == [f"Assigned to you: {second} Printer"]
        assert polls(driver) == []

        # Mark read: the number goes, the row says so.
        item.find_element(By.CLASS_NAME, "notify-read").click()
        wait(driver, lambda d: bell(d) == "1")
        driver.find_element(By.ID, "notify-read-all").click()
        wait(driver, lambda d: bell(d) == "")
        with engine.connect() as conn:
            unread = conn.execute(
                select(Notification.id).where(
                    Notification.user_id == ann, Notification.read_at.is_(None)
                )
            ).all()
        assert unread == []

        # Settings: browser notifications off, the digest on with an address.
        driver.refresh()
        wait(driver, lambda d: d.find_element(By.ID, "notify-browser").is_displayed())
        driver.find_element(By.ID, "notify-browser").click()
        driver.find_element(By.CSS_SELECTOR, ".notify-kind[value=breach]").click()
        driver.find_element(By.ID, "notify-digest").click()
        driver.find_element(By.ID, "notify-address").send_keys("ann@agents.example")
        driver.find_element(By.CSS_SELECTOR, "#notify-settings button[type=submit]").click()
        wait(driver, lambda d: d.find_element(By.ID, "notify-saved").text == "Saved.")
        assert notifications.get_prefs(engine, ann) == {
            "kinds": ["assigned", "answered"],
            "browser": False,
            "digest": True,
            "address": "ann@agents.example",
        }
        # With browser notifications off, a new one only counts on the bell.
        third = email_case(engine, "pat@example.org", "Invoice", "Send the invoice.")
        casework.assign(engine, mia, third, "ann")
        wait(driver, lambda d: bell(d) == "1")
        assert recorded(driver)[0] == []
        # Opening the case reads its notification (the bell starts hidden on any page, so
        # the store says when the page has done it).
        driver.get(f"{server.url}/cases/{third}")

        def unread_left(_: WebDriver) -> bool:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(Notification.id).where(
                        Notification.user_id == ann, Notification.read_at.is_(None)
                    )
                ).all()
            return rows == []

        wait(driver, unread_left)
        wait(driver, lambda d: bell(d) == "")
        assert polls(driver) == []


def test_the_bell_polls_only_while_its_stream_is_down(engine: Engine, browser: WebDriver) -> None:
    """The fallback: a page whose stream is refused (the session ended under it) falls back
    to polling, every [inbox] notify_fallback_poll_seconds (here the least, 5 s)."""
    make_user(engine, "ann")
    driver = browser
    with Server(engine, InboxSettings(notify_fallback_poll_seconds=5)) as server:
        login(driver, server, "ann")
        wait(driver, live)
        assert polls(driver) == []
        # Ann logs out in another tab: this page's stream ends and is refused (401); the page
        # polls (and is refused too), and reopens the stream at each poll.
        driver.execute_script(
            "fetch('/api/logout', {method: 'POST', credentials: 'same-origin', headers: "
            "{'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}})"
        )
        wait(driver, lambda d: not live(d))
        wait(driver, lambda d: polls(d) != [], timeout=60)
