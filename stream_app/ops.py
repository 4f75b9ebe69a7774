"""The ops page: the engine's health, live alert feed, top customers by value at risk, churn
model metrics.

``GET /ops`` serves one static page (``stream_app/static/ops.html``: inline CSS
and vanilla JS, no external assets) that polls ``GET /ops/feed.json`` every
1.5 s and redraws itself without a reload. The JSON gathers three independent
reads of Redis and what this worker's metrics sampler knows (``engine``:
throughput and lag over the last minutes, dead letters by reason, the models'
versions and ages); a part that fails is reported under ``errors`` and leaves
the others standing. The churn metrics are shown as the learner writes them
(`domain.churn.ProgressiveMetrics.summary`: ``auc``, ``drifts``, ``calibration``
bins).

The page renders every value with ``textContent``, never as HTML, so nothing a
message carries (customer ids, reason details) can inject markup. As a second
line of defence the page is served with a Content-Security-Policy that allows
only its own inline script and style (by hash) and requests to its own origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View
from redis.asyncio import Redis

from stream_app import lookup
from stream_app.runtime import Runtime
from stream_app.store import churn_models, feed, shards
from stream_app.store.keys import Keys
from stream_app.web_side import WebSide

__all__ = ["FEED_DEFAULT", "TOP_N", "content_security_policy", "page", "register",
           "register_trends", "snapshot"]

#: Feed entries sent to the page by default (``?n=`` asks for up to `feed.FEED_LENGTH`).
FEED_DEFAULT = 50
#: Customers in the value-at-risk table.
TOP_N = 20
_NONE = "'none'"


def page(name: str = "ops") -> str:
    """The HTML of the ops page (or another static page), as shipped in the package.

    A line ``// @include NAME`` is replaced by the static file NAME, so the pages share
    their scripts while each stays one document (its inline script is hashed into the
    page's `content_security_policy`).
    """
    static = resources.files("stream_app").joinpath("static")
    html = static.joinpath(f"{name}.html").read_text("utf-8")
    return re.sub(r"^ *// @include ([\w.-]+)\n",
                  lambda m: static.joinpath(m.group(1)).read_text("utf-8"), html, flags=re.M)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy(html: str) -> str:
    """A policy that allows the page's own inline ``<script>`` and ``<style>`` and nothing else.

    >>> content_security_policy("<style>a{}</style><script>1</script>").split("; ")[:3]
    ["default-src 'none'", "script-src 'sha256-a4ayc/80/OGda4BO/1o/V0etpOqiLx1JwB5S3beHW0s='", \
"style-src 'sha256-X1RutGBrXCt9KkSaXMK7tHftWiRscFHOhxsS8tv8hBk='"]
    """
    scripts = " ".join(_sha256(s) for s in re.findall(r"<script>(.*?)</script>", html, re.S))
    styles = " ".join(_sha256(s) for s in re.findall(r"<style>(.*?)</style>", html, re.S))
    return "; ".join([
        "default-src 'none'",
        f"script-src {scripts or _NONE}",
        f"style-src {styles or _NONE}",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


async def _feed(redis: Redis, keys: Keys, n: int) -> list[dict[str, Any]]:
    # An entry that is not JSON is shown marked, rather than losing the feed.
    out: list[dict[str, Any]] = []
    for raw in await shards.feed(redis, keys, n):
        try:
            entry = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            entry = {"type": "malformed", "error": str(exc), "raw": bytes(raw)[:200].decode(
                "utf-8", "replace")}
        out.append(entry)
    return out


async def _metrics(redis: Redis, keys: Keys) -> dict[str, Any] | None:
    doc = await churn_models.metrics(redis, keys)
    if doc is not None and not isinstance(doc, dict):
        raise ValueError(f"{keys.churn_metrics} holds a JSON {type(doc).__name__}, not an object")
    return doc


async def snapshot(
    redis: Redis,
    keys: Keys,
    n: int = FEED_DEFAULT,
    engine: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything the ops page shows, as one JSON-ready document.

    ``feed``: the newest `n` alerts and win-back triggers, newest first;
    ``top``: the `TOP_N` customers by value at risk; ``metrics``: the churn
    model's metrics or None before the learner wrote any; ``engine``: what
    `engine` returns (`metrics.Sampler.overview`), or None without one;
    ``errors``: the part that could not be read and why.
    """
    doc: dict[str, Any] = {"feed": [], "top": [], "metrics": None, "engine": None, "errors": {}}
    reads = {
        "feed": lambda: _feed(redis, keys, n),
        "top": lambda: lookup.top(redis, "value_at_risk", TOP_N, keys=keys),
        "metrics": lambda: _metrics(redis, keys),
    }
    for part, read in reads.items():
        try:
            doc[part] = await read()
        except Exception as exc:  # one broken part must not blank the whole page
            doc["errors"][part] = f"{type(exc).__name__}: {exc}"
    if engine is not None:
        try:
            doc["engine"] = engine()
        except Exception as exc:
            doc["errors"]["engine"] = f"{type(exc).__name__}: {exc}"
    doc["generated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return doc


def register(app: faust.App, side: WebSide) -> None:
    """Attach ``GET /ops`` and ``GET /ops/feed.json`` to `app`."""
    runtime = side.runtime
    html = page()
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }

    @app.page("/ops")
    async def ops_page(web: View, request: Request) -> Response:
        return web.html(html, headers=dict(headers))

    @app.page("/ops/feed.json")
    async def ops_feed(web: View, request: Request) -> Response:
        try:
            n = int(request.query.get("n", str(FEED_DEFAULT)))
        except ValueError:
            n = 0
        if not 1 <= n <= feed.FEED_LENGTH:
            return web.json(
                {"error": "bad_request", "detail": f"n must be within 1..{feed.FEED_LENGTH}"},
                status=400,
            )
        # The metrics sampler is attached by `metrics.register`, after this.
        sampler = getattr(runtime, "sampler", None)
        doc = await snapshot(side.redis, runtime.keys, n,
                             engine=None if sampler is None else sampler.overview)
        return web.json(doc, headers={"Cache-Control": "no-store",
                                      "X-Content-Type-Options": "nosniff"})


def register_trends(app: faust.App, runtime: Runtime) -> None:
    """Attach ``GET /ops/trends``: charts of ``/trends`` and the ``/customers/unprofitable``
    summary (``stream_app/static/trends.html``, inline SVG, same policy as the ops page)."""
    html = page("trends")
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }

    @app.page("/ops/trends")
    async def trends_page(web: View, request: Request) -> Response:
        return web.html(html, headers=dict(headers))
