"""Shared by the board's and the explorer's browser tests: Debian's Chromium under Selenium."""

from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, driven by Selenium through Debian's chromedriver (never a downloaded browser)."""
    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), (
        "the browser tests need Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver "
        "(the README's test command and .ci/run install them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1400,1000", "--allow-file-access-from-files"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    yield driver
    driver.quit()


def console_errors(driver):
    """The SEVERE entries of the browser's console log since the last call."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


