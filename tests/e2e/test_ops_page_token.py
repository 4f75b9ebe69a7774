"""The ops page of a worker that requires a token, in a real headless Chromium."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, expect

from stream_app.settings import Settings
from tests.conftest import WorkerProcess
from tests.e2e.test_ops_page import WAIT_MS, _seed, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration

TOKEN = "ops-page-token-0123456789"


@pytest.fixture
def guarded(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess(settings, tmp_path / "worker.log")
    w.env["CVM_API_TOKENS"] = f"ops:{TOKEN}:read"
    w.start()
    yield w
    w.stop()


def test_ops_page_sends_the_token_it_was_opened_with(
    browser: Browser, settings: Settings, guarded: WorkerProcess  # noqa: F811
) -> None:
    _seed(settings)
    base = f"http://{settings.web_host}:{settings.web_port}"
    page = browser.new_page()
    page.goto(f"{base}/ops#token={TOKEN}", timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text(re.compile(r"^live"), timeout=WAIT_MS)
    expect(page.locator("#top-rows tr")).to_have_count(3, timeout=WAIT_MS)
    assert TOKEN not in page.url  # taken out of the address bar (and so out of history)
    page.close()

    # Without a token the page asks once; the answer is used for the next requests.
    page = browser.new_page()
    asked: list[str] = []

    def answer(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept(TOKEN)

    page.on("dialog", answer)
    page.goto(f"{base}/ops", timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text(re.compile(r"^live"), timeout=WAIT_MS)
    assert len(asked) == 1 and "token" in asked[0].lower()
    page.close()

    # A wrong token is not shown data and is told why.
    page = browser.new_page()
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.goto(f"{base}/ops#token=wrong-token-of-nobody", timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text(re.compile(r"401"), timeout=WAIT_MS)
    assert page.locator("#top-rows tr td.cust").count() == 0
    page.close()
