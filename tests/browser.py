"""A real browser for the web tests: Debian's chromium driven by Selenium through Debian's
chromedriver (``make test`` installs both when missing; nothing is downloaded at run time),
and the few steps every page test takes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_SECONDS = 15

# For the modules that need it: skipped only where Debian's chromium is not installed.
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's chromium is not installed at /usr/bin/chromium (`make test` installs "
    "chromium and chromium-driver when run as root)",
)


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium (Debian's, through its chromedriver): nothing is downloaded."""
    profile = tempfile.mkdtemp(prefix="desk-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1440,1000", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(arg)
    # The console, to see that the strict CSP blocked nothing the desk itself needs.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as env:
        # Selenium Manager stays offline (it is not needed: the driver's path is given).
        env.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_page_load_timeout(WAIT_SECONDS)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(browser: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(browser, WAIT_SECONDS)


def left(browser: WebDriver, page: WebElement) -> None:
    """Wait until ``page`` (the old document's root) is gone and the new one has loaded.

    Selenium's ``staleness_of`` expects a StaleElementReferenceException only; while the
    old document is being torn down, chromedriver may answer "Node with given id does not
    belong to the document" instead (a WebDriverException; seen in CI). Both mean the old
    page is gone."""

    def gone(_: WebDriver) -> bool:
        try:
            page.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one as well
            return True
        return False

    wait(browser).until(gone)
    wait(browser).until(lambda b: b.execute_script("return document.readyState") == "complete")


def submit(browser: WebDriver, button: WebElement) -> None:
    """Press a form's button and wait for the next page."""
    page = browser.find_element(By.TAG_NAME, "html")
    button.click()
    left(browser, page)


def heading(browser: WebDriver) -> str:
    return browser.find_element(By.TAG_NAME, "h1").text


def images_loaded(browser: WebDriver) -> list[dict[str, Any]]:
    """Each comparison image's load state and natural size, once all have finished."""
    script = (
        "return Array.from(document.querySelectorAll('img.zoomable')).map(i => ({id: i.id, "
        "complete: i.complete, w: i.naturalWidth, h: i.naturalHeight, "
        "shown: i.getBoundingClientRect().width, x: i.getBoundingClientRect().x, "
        "y: i.getBoundingClientRect().y}))"
    )
    wait(browser).until(lambda b: all(i["complete"] for i in b.execute_script(script)))
    found: list[dict[str, Any]] = browser.execute_script(script)
    return found
