"""The case page's person and team pickers (issue 22) in real headless Chromium, by the
keyboard as an agent uses them: `a` focuses the person picker, a few letters choose, Enter
assigns; the team picker the same way. Checked in the store and the audit log, on SQLite
and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from sqlalchemy import Engine, select, update

from inbox import teams
from inbox.models import AuditLog, Case, Team, User
from tests.support.inbox_helpers import case_row, email_case, make_user
from tests.test_agent_day_browser import active_id, login, press
from tests.test_browser import Server, browser, wait

__all__ = ["browser"]  # the fixture, used by name


def holder(engine: Engine, reference: str) -> tuple[str | None, str | None]:
    """(assignee, team) of a case, by name."""
    with engine.connect() as conn:
        row = conn.execute(
            select(User.name, Team.name)
            .select_from(Case)
            .outerjoin(User, User.id == Case.assignee_id)
            .outerjoin(Team, Team.id == Case.team_id)
            .where(Case.reference == reference)
        ).one()
    return row[0], row[1]


def actions(engine: Engine, reference: str) -> list[tuple[str, str]]:
    case_id = case_row(engine, reference).id
    with engine.connect() as conn:
        return [
            (r.actor, r.action)
            for r in conn.execute(
                select(AuditLog).where(AuditLog.case_id == case_id).order_by(AuditLog.id)
            )
            if r.action in ("case.assigned", "case.team")
        ]


def test_a_manager_assigns_a_person_and_a_team_by_the_keyboard(
    engine: Engine, browser: WebDriver
) -> None:
    make_user(engine, "mia", role="manager")
    make_user(engine, "ann")
    make_user(engine, "bob")
    make_user(engine, "gone")
    with engine.begin() as conn:
        conn.execute(update(User).where(User.name == "gone").values(disabled=True))
    teams.create_team(engine, "test", "billing")
    teams.create_team(engine, "test", "dach")
    ref = email_case(
        engine, "kim@example.net", "Invoice copy", "Please send it.", at=datetime.now(UTC)
    )
    with Server(engine) as server:
        driver = browser
        login(driver, server, "mia")
        driver.get(f"{server.url}/cases/{ref}")
        wait(driver, lambda d: d.find_elements(By.ID, "assignee"))
        picker = Select(driver.find_element(By.ID, "assignee"))
        # Active users only, nobody first: no free text to mistype, no disabled account.
        assert [o.text for o in picker.options] == ["nobody", "ann", "bob", "mia"]
        assert picker.first_selected_option.text == "nobody"
        assert [o.text for o in Select(driver.find_element(By.ID, "team-choice")).options] == [
            "no team",
            "billing",
            "dach",
        ]

        press(driver, "a")
        assert active_id(driver) == "assignee"
        driver.switch_to.active_element.send_keys("bo", Keys.ENTER)
        wait(driver, lambda _: holder(engine, ref)[0] == "bob")
        wait(
            driver,
            lambda d: Select(d.find_element(By.ID, "assignee")).first_selected_option.text == "bob",
        )

        team = driver.find_element(By.ID, "team-choice")
        team.send_keys("d", Keys.ENTER)
        wait(driver, lambda _: holder(engine, ref) == ("bob", "dach"))
        wait(
            driver,
            lambda d: (
                Select(d.find_element(By.ID, "team-choice")).first_selected_option.text == "dach"
            ),
        )
        # Back to nobody, by the arrow keys this time.
        driver.execute_script("window.beforeAssign = true")
        press(driver, "a")
        driver.switch_to.active_element.send_keys(Keys.HOME, Keys.ENTER)
        wait(driver, lambda _: holder(engine, ref) == (None, "dach"))
        # The page reloads after the change: leave only once it has, or the reload could
        # cancel the next navigation.
        wait(driver, lambda d: d.execute_script("return window.beforeAssign") is None)
        wait(driver, lambda d: d.find_elements(By.ID, "assignee"))
        # The queue row shows the team, and the team filter finds it.
        driver.get(f"{server.url}/queue?team=dach")
        badge = wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, f"tr[data-reference='{ref}'] .badge.team"),
        )
        assert [b.text for b in badge] == ["dach"]
        driver.get(f"{server.url}/queue?team=billing")
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#queue-rows tr.empty"))
    assert actions(engine, ref) == [
        ("user:mia", "case.assigned"),
        ("user:mia", "case.team"),
        ("user:mia", "case.assigned"),
    ]


def test_an_agents_picker_offers_themselves_and_the_current_assignee(
    engine: Engine, browser: WebDriver
) -> None:
    make_user(engine, "ann")
    make_user(engine, "bob")
    make_user(engine, "cy")
    ref = email_case(engine, "kim@example.net", "Hello", "Hi", at=datetime.now(UTC))
    other = email_case(
        engine, "lee@example.net", "Parcel", "Late", at=datetime.now(UTC) - timedelta(hours=1)
    )
    with engine.begin() as conn:
        bob = conn.execute(select(User.id).where(User.name == "bob")).scalar_one()
        conn.execute(update(Case).where(Case.reference == other).values(assignee_id=bob))
    with Server(engine) as server:
        driver = browser
        login(driver, server, "ann")
        driver.get(f"{server.url}/cases/{ref}")
        wait(driver, lambda d: d.find_elements(By.ID, "assignee"))
        # The server lets an agent assign only themselves: the picker offers no more.
        assert [o.text for o in Select(driver.find_element(By.ID, "assignee")).options] == [
            "nobody",
            "ann",
        ]
        # The page reloads once the assignment is stored; a navigation started before that
        # reload would be overtaken by it, so the test waits for the new document.
        driver.execute_script("document.body.dataset.before = 'assign'")
        press(driver, "a")
        driver.switch_to.active_element.send_keys("an", Keys.ENTER)
        wait(driver, lambda _: holder(engine, ref)[0] == "ann")
        wait(driver, lambda d: d.execute_script("return !document.body.dataset.before"))
        driver.get(f"{server.url}/cases/{other}")
        wait(driver, lambda d: d.find_elements(By.ID, "assignee"))
        picker = Select(driver.find_element(By.ID, "assignee"))
        assert [o.text for o in picker.options] == ["nobody", "ann", "bob"]
        assert picker.first_selected_option.text == "bob"
