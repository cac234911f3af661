"""Real headless Chromium (Debian's chromium and chromedriver) for the browser tests.

Missing chromium or chromedriver is a failure, not a skip: a CI without the browser must not
pass the browser tests. `scripts/bootstrap --test` installs them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium(*, javascript: bool = True, width: int = 1280) -> WebDriver:
    """A headless browser `width` pixels wide (900 high); with `javascript` off, it runs no
    script at all (the no-script path of the pages)."""
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).exists(), f"{CHROMIUM} is missing"
    assert Path(CHROMEDRIVER).exists(), f"{CHROMEDRIVER} is missing"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--window-size={width},900",
    ):  # fmt: skip
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    return driver
