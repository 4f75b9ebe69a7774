"""The ops page in a real headless Chromium, driven by Playwright, against a real worker.

Chromium is Debian's (``scripts/ensure-chromium`` installs it); Playwright's own
browser download is never used. The test skips only when Chromium is missing and
cannot be installed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
from redis.asyncio import Redis

from stream_app.contract import Contract, schema_dir
from stream_app.settings import Settings
from stream_app.store import feed
from stream_app.store.keys import Keys
from stream_app.worker_process import wait_until
from tests.conftest import ROOT, WorkerProcess, consume_all, http_json
from tests.e2e.engine_run import BROKEN, churn_metrics, feed_stream, wait_for_churn_metrics

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("CVM_CHROMIUM", "/usr/bin/chromium")
# No network here beyond package registries: keep Chromium from calling home.
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WAIT_MS = 15_000
EVIL_CUSTOMER = "c-<script>window.__pwned=1</script>"
EVIL_DETAIL = '2 complaints <img src=x onerror="window.__pwned=2"> in 30 days'


def _chromium() -> str | None:
    return shutil.which(CHROMIUM)  # an absolute path, or a name looked up on PATH


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium; installed with scripts/ensure-chromium if missing.

    Module-scoped: Playwright's sync API keeps an event loop running in this thread
    while it is open, which asyncio tests in later modules must not inherit.
    """
    path = _chromium()
    if path is None:
        result = subprocess.run(
            [str(ROOT / "scripts" / "ensure-chromium")], capture_output=True, text=True,
            timeout=900, check=False,
        )
        path = _chromium()
        if path is None:
            pytest.skip(
                f"Chromium is not at {CHROMIUM} and scripts/ensure-chromium could not install "
                f"it (exit {result.returncode}): {result.stderr.strip()[-500:]}"
            )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=LAUNCH_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _alert(alert_id: str, customer_id: str) -> dict[str, Any]:
    """The contract's example alert with a fresh id, checked against schemas/alert.v1.json."""
    message = orjson.loads((schema_dir() / "examples" / "alert.defection_risk.json").read_bytes())
    message.update(alert_id=alert_id, customer_id=customer_id)
    message["reasons"][0]["detail"] = EVIL_DETAIL
    Contract().validate_output("alert", message)
    return message


def _winback(trigger_id: str, customer_id: str) -> dict[str, Any]:
    message = orjson.loads((schema_dir() / "examples" / "winback.email.json").read_bytes())
    message.update(trigger_id=trigger_id, customer_id=customer_id, control_group=True)
    Contract().validate_output("winback", message)
    return message


def _push(settings: Settings, kind: str, message: dict[str, Any]) -> None:
    async def main() -> None:
        client = Redis.from_url(settings.redis_url)
        try:
            await feed.push(client, Keys(), kind, message)
        finally:
            await client.aclose()

    # Playwright's sync API keeps an event loop running in this thread: use another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, main()).result(timeout=30)


def _seed(settings: Settings) -> None:
    """Three ranked customers, as the engine would write them.

    The churn metrics are not seeded: `test_ops_page_shows_what_a_real_engine_wrote` checks
    them as a real worker's learner writes them.
    """
    keys = Keys()
    client = redis.Redis.from_url(settings.redis_url)
    for i, var in enumerate((4200.0, 1800.5, 320.25), start=1):
        cid = f"c-top-{i}"
        client.zadd(keys.shard_of(cid).rank("value_at_risk"), {cid: var})
        client.hset(keys.customer(cid), mapping={
            "clv": str(var * 1.5), "value_at_risk": str(var), "p_alive": "0.4",
            "net_contribution": "100.00", "value_tier": str(99 - i), "rfm_segment": "at_risk",
            "last_event_at": "2026-01-20T10:00:00Z",
        })
    client.close()


def _open(browser: Browser, settings: Settings, problems: list[str]) -> Page:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":  # CSP violations and script errors land here
            problems.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.goto(f"http://{settings.web_host}:{settings.web_port}/ops", timeout=WAIT_MS)
    # A locator, not wait_for_function: the page's CSP forbids the eval that polling needs.
    expect(page.locator("#status")).to_have_text(re.compile(r"^live"), timeout=WAIT_MS)
    return page


def test_ops_page_shows_live_feed_top_and_metrics(
    browser: Browser, settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    _seed(settings)
    _push(settings, "winback", _winback(f"wb-e2e-{uuid.uuid4().hex[:8]}", "c-lapsed-1"))

    status, doc = http_json(settings, "/ops/feed.json?n=5")
    assert status == 200, doc
    assert doc["errors"] == {} and len(doc["feed"]) == 1 and len(doc["top"]) == 3
    assert doc["metrics"] is None
    assert http_json(settings, "/ops/feed.json?n=0")[0] == 400
    base = f"http://{settings.web_host}:{settings.web_port}"
    with urllib.request.urlopen(f"{base}/ops", timeout=5) as r:
        policy = r.headers["Content-Security-Policy"]
        assert r.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy

    problems: list[str] = []
    page = _open(browser, settings, problems)

    # The three sections, with what the seeding put there.
    for section, title in (("#feed", "Live alert feed"), ("#top", "Top customers by value at risk"),
                           ("#metrics", "Churn model")):
        assert page.locator(f"{section} h2").inner_text() == title
        assert page.locator(section).is_visible()
    assert page.locator("#top-rows tr").count() == 3
    assert page.locator("#top-rows tr").first.locator("td.cust").inner_text() == "c-top-1"
    assert page.locator("#metrics-empty").is_visible()
    control = page.locator("#feed-rows tr.is-control")
    assert control.count() == 1 and "control" in control.inner_text()

    # A new alert appears without a reload; its text is shown as text, never run.
    page.evaluate("window.__notReloaded = true")
    alert_id = f"al-e2e-{uuid.uuid4().hex[:12]}"
    _push(settings, "alert", _alert(alert_id, EVIL_CUSTOMER))
    row = page.locator(f'#feed-rows tr[data-id="{alert_id}"]')
    row.wait_for(state="visible", timeout=WAIT_MS)
    assert page.evaluate("window.__notReloaded") is True
    assert page.locator("#feed-rows tr").first.get_attribute("data-id") == alert_id
    assert row.locator("td.cust").inner_text() == EVIL_CUSTOMER
    assert EVIL_DETAIL in row.inner_text()
    assert row.locator("script, img").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    badge = row.locator(".badge.sev-high")
    assert badge.inner_text() == "high"
    assert badge.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
    assert "0.72" in row.inner_text() and "1,840.25" in row.inner_text()

    # animations="disabled": the new row's highlight is fast-forwarded to its end.
    page.screenshot(path=str(tmp_path / "ops.png"), full_page=True, animations="disabled")
    page.close()
    assert problems == [], problems


def _cell(x: float | None, digits: int) -> str:
    """A number as the page prints it (`fixed`, JavaScript's toFixed), or the dash for none.

    toFixed rounds the exact binary value half away from zero (0.3125 gives "0.313"), where
    Python's format rounds half to even ("0.312").
    """
    if x is None:
        return "\u2014"
    if x == 0:
        x = 0.0  # toFixed prints a negative zero without its sign
    return str(Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def test_ops_page_shows_what_a_real_engine_wrote(
    browser: Browser, settings: Settings, fast_worker: WorkerProcess, tmp_path: Path
) -> None:
    """A real worker on a simulated stream: the page shows the AUC, drift, calibration bins,
    throughput, dead letters and model ages that the engine itself wrote and measured."""
    n_events = feed_stream(settings)
    wait_for_churn_metrics(settings, fast_worker, n_events)
    client = redis.Redis.from_url(settings.redis_url)
    problems: list[str] = []
    page = _open(browser, settings, problems)
    expect(page.locator("#metrics-body")).to_be_visible(timeout=WAIT_MS)

    # The learner may publish again meanwhile: compare once the page shows the version in Redis.
    written: dict[str, Any] = {}

    def same_version() -> bool:
        doc = churn_metrics(client)
        if doc and page.locator("#m-version").inner_text() == doc["model_version"]:
            written.update(doc)
            return True
        return False

    assert wait_until(same_version, deadline_s=30, every=0.3), churn_metrics(client)
    assert written["auc"] is not None and written["calibration"]
    assert page.locator("#m-auc").inner_text() == _cell(written["auc"], 3)
    assert page.locator("#m-rolling-auc").inner_text() == _cell(written["rolling_auc"], 3)
    assert page.locator("#m-logloss").inner_text() == _cell(written["log_loss"], 4)
    assert page.locator("#m-examples").inner_text() == f"{written['examples']:,}"
    drifts = written["drifts"]
    assert page.locator("#m-drift").inner_text().startswith(
        f"{drifts:,} drift{'' if drifts == 1 else 's'} (ADWIN")
    rows = page.locator("#calibration-rows tr")
    assert rows.count() == len(written["calibration"]) == 10
    for i, b in enumerate(written["calibration"]):
        cells = rows.nth(i).locator("td").all_inner_texts()
        assert cells[:4] == [b["bin"], f"{b['n']:,}", _cell(b["mean_predicted"], 3),
                             _cell(b["observed"], 3)], (i, cells, b)
    assert any(b["n"] for b in written["calibration"])

    # What an operator looks at first: this worker's throughput, lag, dead letters, model ages.
    expect(page.locator("#e-value-model")).to_have_text(
        re.compile(r"^v\d+, fitted \d+ (s|min) ago"), timeout=30_000)
    expect(page.locator("#e-applied")).to_have_text(f"{n_events:,}", timeout=WAIT_MS)
    assert re.match(r"^[\d,]+ messages", page.locator("#e-lag").inner_text())
    # The Engine section shows what the worker's metrics sampler last read, which may trail
    # the churn metrics above by one sampling interval.
    churn_name = written["model_version"].rsplit("-v", 1)[0]
    expect(page.locator("#e-churn-model")).to_have_text(
        re.compile("^" + re.escape(churn_name) + r".*, published "), timeout=30_000)
    rates = [float(t) for t in page.locator("#history-rows tr td:nth-child(2)").all_inner_texts()]
    assert rates and max(rates) > 0, rates
    letters = consume_all(settings, settings.topics.dead_letter, expected=sum(
        map(len, BROKEN.values())))
    by_code = Counter(orjson.loads(m.value())["error_code"] for m in letters)
    shown = {
        r.locator("td").nth(0).inner_text(): r.locator("td").nth(1).inner_text()
        for r in page.locator("#dead-letter-rows tr").all()
    }
    assert shown == {code: str(n) for code, n in by_code.items()}, (shown, by_code)

    page.screenshot(path=str(tmp_path / "ops-engine.png"), full_page=True, animations="disabled")
    page.close()
    client.close()
    assert problems == [], problems
