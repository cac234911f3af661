"""Issue 16's web fixes where they live in the browser, in real headless Chromium: the login
redirect (Chromium reads "\\" as "/" and drops tabs, which is how the attack worked) and the
reply box of a case another agent holds. Few and slow; the rest is in test_trust_web.py."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import Engine

from inbox import accounts
from tests.support.inbox_helpers import PASSWORD, email_case, make_user
from tests.test_browser import Server, browser, wait

__all__ = ["browser"]  # the fixture, used by name


def log_in(driver: WebDriver, name: str) -> None:
    wait(driver, lambda d: d.find_elements(By.ID, "password"))
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()


# The redirect does not touch the store: one database is enough.
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_hostile_next_leaves_the_browser_on_our_origin(
    engine: Engine, browser: WebDriver
) -> None:
    make_user(engine, "ann")
    reference = email_case(engine, "pat@example.org", "Card declined", "It failed again.")
    with Server(engine) as server:
        driver = browser
        for raw in (
            "/%5Cevil.example/",
            "/%09/evil.example/",
            "//evil.example/",
            "/%2F%2Fevil.example/",
            "/..//evil.example/",
            "https:evil.example/",
        ):
            driver.delete_all_cookies()
            driver.get(f"{server.url}/login?next={raw}")
            log_in(driver, "ann")
            wait(driver, lambda d: "/login" not in d.current_url)
            assert driver.current_url == f"{server.url}/queue", raw
        # A link of ours still brings the agent back where they were going.
        driver.delete_all_cookies()
        driver.get(f"{server.url}/login?next=/cases/{reference}")
        log_in(driver, "ann")
        wait(driver, lambda d: "/login" not in d.current_url)
        assert driver.current_url == f"{server.url}/cases/{reference}"


def test_the_reply_box_is_shut_while_another_agent_holds_the_case(
    engine: Engine, browser: WebDriver
) -> None:
    make_user(engine, "ann")
    make_user(engine, "bo")
    reference = email_case(engine, "pat@example.org", "Card declined", "It failed again.")
    ann = accounts.create_token(engine, "ann", label="browser test")
    with Server(engine) as server:
        driver = browser
        lease = server.call(ann, "POST", f"/api/cases/{reference}/claim", {})["lease"]
        driver.get(f"{server.url}/cases/{reference}")
        log_in(driver, "bo")
        wait(driver, lambda d: d.current_url == f"{server.url}/cases/{reference}")
        text = driver.find_element(By.ID, "reply-text")
        send = driver.find_element(By.CSS_SELECTOR, "#reply button[type=submit]")
        held = driver.find_element(By.ID, "reply-held")
        assert not text.is_enabled() and not send.is_enabled()
        assert held.is_displayed()
        assert held.text.startswith(f"ann holds this case until {lease['until']}")

        def check_again() -> None:
            # What an agent coming back to the tab does; the page also re-checks every 20 s
            # and when the hold ends.
            driver.execute_script("window.dispatchEvent(new Event('focus'))")

        # Ann releases it: Bo's box opens without a reload.
        driver.execute_script("window.notReloaded = true")
        server.call(ann, "DELETE", f"/api/cases/{reference}/claim")
        check_again()
        wait(driver, lambda d: d.find_element(By.ID, "reply-text").is_enabled())
        assert not driver.find_element(By.ID, "reply-held").is_displayed()
        # Ann takes it again: shut again, still without a reload.
        server.call(ann, "POST", f"/api/cases/{reference}/claim", {})
        check_again()
        wait(driver, lambda d: not d.find_element(By.ID, "reply-text").is_enabled())
        assert driver.find_element(By.ID, "reply-held").text.startswith("ann holds this case")
        assert driver.execute_script("return window.notReloaded") is True
