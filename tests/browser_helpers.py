"""What the browser tests share: Debian's Chromium driven by Playwright (no browser download), the page timeout,
and signing in through the login form."""

from __future__ import annotations

import pytest

from _labeling_seed import PASSWORD

from prefloop.testing import CHROMIUM, CHROMIUM_ARGS
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def login(page, url, name, password=PASSWORD):
    page.goto(url)
    page.locator("input[type=text]").fill(name)
    page.locator("input[type=password]").fill(password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#pl-header >> text=signed in as")
