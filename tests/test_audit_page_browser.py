"""The manager page in a real browser (Debian chromium through selenium): the charts render,
the CSP lets the page's own style through, and a screenshot goes to docs/managers/index.md.

Set PARITY_SCREENSHOTS=1 to refresh docs/screenshots/manager.png; the test always takes one.
Without chromium this fails: a missing browser is not a reason to skip."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

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
from tests.support.inbox_helpers import DOMAIN, PASSWORD, make_user
from tests.test_audit_report import EVENTS, seed

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "manager.png"


def browse(url: str, cookie: str, out: Path) -> dict[str, object]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1500",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        driver.get(url.replace("/manager/audit", "/healthz"))
        driver.add_cookie({"name": SESSION_COOKIE, "value": cookie, "path": "/"})
        driver.get(url)
        charts = driver.find_elements(By.CSS_SELECTOR, "svg")
        bars = driver.find_elements(By.CSS_SELECTOR, "svg a rect")
        banner = driver.find_element(By.CSS_SELECTOR, ".breach")
        driver.save_screenshot(str(out))
        return {
            "title": driver.title,
            "charts": len(charts),
            "bars": len(bars),
            "banner": banner.text,
            "banner_background": banner.value_of_css_property("background-color"),
        }
    finally:
        driver.quit()


async def test_the_manager_page_renders_in_chromium(engine: Engine, tmp_path: Path) -> None:
    seed(engine, EVENTS)
    make_user(engine, "boss", role="manager")
    app = create_app(engine, InboxSettings(cookie_secure=False), message_id_domain=DOMAIN)
    manager.install(app, AuditSettings(parity_ratio_threshold=2.0))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            login = await http.post(
                f"{base}/api/login", json={"name": "boss", "password": PASSWORD}
            )
            assert login.status == 200, await login.text()
            cookie = login.cookies[SESSION_COOKIE].value
        out = tmp_path / "manager.png"
        seen = await asyncio.to_thread(browse, f"{base}/manager/audit?since=30d", cookie, out)
    finally:
        await runner.cleanup()
    assert seen["title"] == "Parity: manager audit"
    assert seen["charts"] == 2
    # One bar per channel and bucket in the histogram.
    channels = {e.channel for e in EVENTS}
    assert seen["bars"] == len(channels) * len(BUCKET_LABELS)
    assert "Parity breach" in str(seen["banner"])
    # The page's style came through its CSP hash: the banner is red-tinted.
    assert seen["banner_background"] in ("rgba(255, 221, 221, 1)", "rgb(255, 221, 221)")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("PARITY_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, SCREENSHOT)
