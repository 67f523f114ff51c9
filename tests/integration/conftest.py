"""Fixtures shared by the integration tests: one real browser per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from tests.browser import chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module (see tests/browser.py)."""
    with chromium() as driver:
        yield driver
