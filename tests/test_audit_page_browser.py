"""The manager page in a real browser (Debian chromium through selenium), as a manager at
1366x768 and on a 390x844 phone, and as an agent: the page is an inbox page (navigation,
stylesheet), fits the width with no horizontal scroll, draws its charts, and an agent gets
the inbox's 403 page. A screenshot goes to docs/managers/index.md.

Set PARITY_SCREENSHOTS=1 to refresh docs/screenshots/manager.png; the test always takes one.
Without chromium this fails: a missing browser is not a reason to skip."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from sqlalchemy import Engine

from inbox.report import BUCKET_LABELS, AuditSettings
from inbox.web import create_app, manager
from inbox.web.app import SESSION_COOKIE
from inbox.web.config import InboxSettings
from tests.support.browser import CHROMEDRIVER, CHROMIUM
from tests.support.inbox_helpers import DOMAIN, PASSWORD, make_user
from tests.test_audit_report import EVENTS, seed

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "manager.png"
PHONE = (390, 844)
LAPTOP = (1366, 768)


def driver_for(width: int, height: int) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--window-size={width},{height}",
    ):  # fmt: skip
        options.add_argument(flag)
    if width < 500:
        # A phone: its viewport, device pixel ratio and touch, as Chrome's device mode has it.
        options.add_experimental_option(
            "mobileEmulation",
            {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 3.0}},
        )
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def browse(url: str, cookie: str, size: tuple[int, int], out: Path | None) -> dict[str, Any]:
    driver = driver_for(*size)
    try:
        driver.get(url.split("/manager", 1)[0] + "/healthz")
        driver.add_cookie({"name": SESSION_COOKIE, "value": cookie, "path": "/"})
        driver.get(url)
        seen: dict[str, Any] = {
            "title": driver.title,
            "inner_width": driver.execute_script("return window.innerWidth"),
            "scroll_width": driver.execute_script("return document.documentElement.scrollWidth"),
            "nav": [a.text for a in driver.find_elements(By.CSS_SELECTOR, "header.top nav a")],
            "charts": len(driver.find_elements(By.CSS_SELECTOR, "svg.chart")),
            "bars": len(driver.find_elements(By.CSS_SELECTOR, "svg a rect")),
            "h1": driver.find_element(By.CSS_SELECTOR, "main h1").text,
            "stylesheet": driver.execute_script(
                "return getComputedStyle(document.querySelector('header.top')).display"
            ),
        }
        banners = driver.find_elements(By.CSS_SELECTOR, ".verdict.breach")
        if banners:
            seen["banner"] = banners[0].text
            seen["banner_background"] = banners[0].value_of_css_property("background-color")
        if out is not None:
            driver.save_screenshot(str(out))
        return seen
    finally:
        driver.quit()


async def login(base: str, name: str) -> str:
    async with aiohttp.ClientSession() as http:
        response = await http.post(f"{base}/api/login", json={"name": name, "password": PASSWORD})
        assert response.status == 200, await response.text()
        return response.cookies[SESSION_COOKIE].value


async def test_the_manager_page_fits_and_renders_in_chromium(engine: Engine, tmp_path: Path):
    seed(engine, EVENTS)
    make_user(engine, "boss", role="manager")
    make_user(engine, "agent1")
    app = create_app(engine, InboxSettings(cookie_secure=False), message_id_domain=DOMAIN)
    manager.install(app, AuditSettings(parity_ratio_threshold=2.0))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    shots = {size: tmp_path / f"manager-{size[0]}.png" for size in (LAPTOP, PHONE)}
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        boss, agent = await login(base, "boss"), await login(base, "agent1")
        url = f"{base}/manager/audit?since=30d"
        seen = {
            size: await asyncio.to_thread(browse, url, boss, size, shots[size])
            for size in (LAPTOP, PHONE)
        }
        forbidden = await asyncio.to_thread(browse, url, agent, PHONE, None)
        drill = await asyncio.to_thread(
            browse, f"{base}/manager/audit/cases?since=30d&which=unanswered", boss, PHONE, None
        )
    finally:
        await runner.cleanup()
    channels = {e.channel for e in EVENTS}
    for size, page in seen.items():
        assert page["inner_width"] == size[0], page
        # No horizontal scroll: the page is no wider than the window.
        assert page["scroll_width"] <= page["inner_width"], (size, page)
        assert page["title"] == "Manager · Parity"
        # the inbox's own header: its links, then the notifications bell
        assert page["nav"] == ["Queue", "Manager", "Canned replies", "🔔"]
        assert page["stylesheet"] == "flex"  # app.css applies
        assert page["charts"] == 3
        # The histogram's bars (one per channel and bucket) and two per channel with next
        # responses in the next-response chart.
        with_next = {e.channel for e in EVENTS if any(t[1] for t in e.turns)}
        assert page["bars"] == len(channels) * len(BUCKET_LABELS) + 2 * len(with_next)
        assert "Parity breach" in page["banner"]
        assert page["banner_background"] in ("rgba(253, 236, 234, 1)", "rgb(253, 236, 234)")
        assert shots[size].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # An agent: the inbox's 403 page, in the inbox's header, without the Manager link.
    assert forbidden["h1"] == "Not for your role"
    assert forbidden["nav"] == ["Queue", "Canned replies", "🔔"]  # no Manager link
    assert forbidden["scroll_width"] <= forbidden["inner_width"]
    # A drill-down is the queue's rows, fitting a phone too.
    assert drill["scroll_width"] <= drill["inner_width"] and "Manager" in drill["nav"]
    if os.environ.get("PARITY_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shots[LAPTOP], SCREENSHOT)
