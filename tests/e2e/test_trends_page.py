"""The trends page in a real headless Chromium, against a real worker's data."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from playwright.sync_api import Browser, ConsoleMessage, expect

from load.generator import publish as publish_events
from load.simulator import simulate
from stream_app.settings import Settings
from stream_app.worker_process import wait_until
from tests.conftest import WorkerProcess, http_json
from tests.e2e.helpers import applied_count
from tests.e2e.test_history_trends import CONFIG, loss_makers
from tests.e2e.test_ops_page import WAIT_MS, browser  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration


def test_trends_page_charts_what_the_engine_wrote(
    browser: Browser, settings: Settings, worker: WorkerProcess, tmp_path: Path  # noqa: F811
) -> None:
    events = sorted([*simulate(CONFIG), *(e for _, evs in loss_makers().values() for e in evs)],
                    key=lambda e: e.occurred_at)
    assert publish_events(events, settings).failed == 0
    client = redis.Redis.from_url(settings.redis_url)
    assert wait_until(lambda: applied_count(client) >= len(events), deadline_s=240), (
        worker.log_tail())
    client.close()
    base = f"http://{settings.web_host}:{settings.web_port}"
    with urllib.request.urlopen(f"{base}/ops/trends", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]

    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":  # CSP violations and script errors land here
            problems.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(f"{base}/ops/trends", timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text(re.compile(r"^live"), timeout=WAIT_MS)

    # A rescore at the watermark may revalue customers between two polls of the page: compare
    # the page with what the API says at the same time, until they agree.
    seen: dict[str, object] = {}

    def agrees() -> bool:
        status, trends = http_json(settings, "/trends?periods=24")
        assert status == 200
        periods = trends["periods"]
        last = periods[-1]
        rows = page.locator("#flow-rows tr")
        first_row = rows.first.locator("td").all_inner_texts() if rows.count() else []
        bars = page.locator(f'#chart-segments rect[data-period="{last["period"]}"]')
        shown = {b.get_attribute("data-segment"): int(b.get_attribute("data-n") or 0)
                 for b in bars.all()}
        seen.update(api=last, page=first_row, bars=shown)
        return (
            page.locator("#k-period").inner_text() == last["period"]
            and page.locator("#k-customers").inner_text() == f"{last['customers']:,}"
            and rows.count() == len(periods) >= 4
            and first_row[:5] == [last["period"], f"{last['customers']:,}", str(last["new"]),
                                  str(last["lost"]), str(last["won_back"])]
            and shown == {s: n for s, n in last["segments"].items() if n}
            and sum(shown.values()) == last["customers"]
            # The charts: one line per series with a point per period.
            and page.locator("#chart-value svg polyline").count() == 2
            and len((page.locator("#chart-value svg polyline").first.get_attribute("points")
                     or "").split()) == len(periods)
        )

    assert wait_until(agrees, deadline_s=30, every=1.0), seen

    # The loss-making customers, with the causes and the recommended actions.
    loss: dict[str, Any] = {}

    def same_count() -> bool:
        status, doc = http_json(settings, "/customers/unprofitable?n=20")
        assert status == 200
        loss.update(doc)
        return page.locator("#u-count").inner_text() == f"{doc['customers']:,}"

    assert wait_until(same_count, deadline_s=30, every=1.0), loss
    assert loss["customers"] >= 3
    causes = page.locator("#cause-rows tr")
    assert causes.count() == 4
    assert causes.nth(1).locator("td").nth(3).inner_text() == (
        loss["by_cause"]["cost_to_serve"]["action"])
    ids = page.locator("#loss-rows td.cust").all_inner_texts()
    assert {"L-serve", "L-returns", "L-mktg"} <= set(ids)
    page.screenshot(path=str(tmp_path / "trends.png"), full_page=True, animations="disabled")
    page.close()
    assert problems == [], problems
