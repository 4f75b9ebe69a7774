"""The trends page in a real headless Chromium, against a real worker's data."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

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

    status, trends = http_json(settings, "/trends?periods=24")
    assert status == 200
    periods = trends["periods"]
    last = periods[-1]
    assert len(periods) >= 4, [p["period"] for p in periods]
    expect(page.locator("#k-period")).to_have_text(last["period"])
    expect(page.locator("#k-customers")).to_have_text(f"{last['customers']:,}")
    expect(page.locator("#flow-rows tr")).to_have_count(len(periods))
    first_row = page.locator("#flow-rows tr").first.locator("td").all_inner_texts()
    assert first_row[:5] == [last["period"], f"{last['customers']:,}", str(last["new"]),
                             str(last["lost"]), str(last["won_back"])]
    # The charts: one line per series with a point per period, bars that add up per period.
    lines = page.locator("#chart-value svg polyline")
    assert lines.count() == 2
    assert len(lines.first.get_attribute("points").split()) == len(periods)  # type: ignore[union-attr]
    bars = page.locator(f'#chart-segments rect[data-period="{last["period"]}"]')
    shown = {b.get_attribute("data-segment"): int(b.get_attribute("data-n") or 0)
             for b in bars.all()}
    assert shown == {s: n for s, n in last["segments"].items() if n}
    assert sum(shown.values()) == last["customers"]

    # The loss-making customers, with the causes and the recommended actions.
    status, loss = http_json(settings, "/customers/unprofitable?n=20")
    assert status == 200 and loss["customers"] >= 3
    expect(page.locator("#u-count")).to_have_text(f"{loss['customers']:,}", timeout=WAIT_MS)
    causes = page.locator("#cause-rows tr")
    assert causes.count() == 4
    assert causes.nth(1).locator("td").nth(3).inner_text() == (
        loss["by_cause"]["cost_to_serve"]["action"])
    ids = page.locator("#loss-rows td.cust").all_inner_texts()
    assert {"L-serve", "L-returns", "L-mktg"} <= set(ids)
    page.screenshot(path=str(tmp_path / "trends.png"), full_page=True, animations="disabled")
    page.close()
    assert problems == [], problems
