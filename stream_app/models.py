"""The value model and population cut points in Redis: fit, store, load.

The fit reads the aggregated statistics tables (``hist:bgnbd`` and
``hist:spend``), whose size grows with the diversity of histories rather than
the number of customers, fits in a worker thread so the event loop keeps
serving, and stores the result as a new numbered version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from stream_app.connections import is_cluster
from stream_app.domain.clv import BgNbdParams, GammaGammaParams
from stream_app.domain.events import MS_PER_DAY
from stream_app.domain.rfm import RfmCuts, percentile_cuts, quintile_cuts
from stream_app.domain.severity import percentile_index, population_bands
from stream_app.domain.tiers import Cuts
from stream_app.domain.valuation import PopulationFit, ValueModel, fit_population
from stream_app.planner import spend_bucket_value
from stream_app.settings import Settings
from stream_app.store import shards
from stream_app.store.keys import Keys
from stream_app.store.records import format_time

log = logging.getLogger(__name__)

#: Fewer customers with a purchase than this and the prior model stays in use.
MIN_FIT_CUSTOMERS = 30


class FitError(RuntimeError):
    """The population cannot be fitted (too little data, or the optimiser failed)."""


def _histogram(raw: dict[str, str]) -> dict[int, int]:
    return {int(k): int(v) for k, v in raw.items() if int(v) > 0}


async def engine_watermark(redis: Redis, keys: Keys, settings: Settings) -> int | None:
    """The engine's as-of time: the lowest watermark over the input partitions seen.

    Global rather than per partition, so every lookup on every worker uses the
    same clock; the lowest, so no partition's customers are valued in a future
    their events have not reached. With CVM_WALL_CLOCK_WATERMARK the wall clock
    advances it during quiet periods.
    """
    return watermark_of(await shards.watermarks(redis, keys), settings)


def watermark_of(raw: Mapping[tuple[str, int], int], settings: Settings) -> int | None:
    """`engine_watermark` of the watermarks as read (``(topic, partition)``: ms)."""
    inputs = set(settings.topics.inputs)
    marks = [v for (topic, _), v in raw.items() if topic in inputs]
    mark = min(marks) if marks else None
    if settings.wall_clock_watermark:
        import time

        now = int(time.time() * 1000)
        mark = now if mark is None else max(mark, now)
    return mark


def model_from_json(raw: bytes | str | None, settings: Settings) -> ValueModel:
    """The stored model, or the prior when none has been fitted yet."""
    base = ValueModel(
        annual_discount_rate=settings.annual_discount_rate,
    )
    if not raw:
        return base
    doc = orjson.loads(raw)
    return ValueModel(
        bg=BgNbdParams(**doc["bgnbd"]),
        gg=GammaGammaParams(**doc["gamma_gamma"]),
        version=int(doc["version"]),
        annual_discount_rate=settings.annual_discount_rate,
    )


async def load_model(redis: Redis, keys: Keys, settings: Settings) -> ValueModel:
    return model_from_json(await redis.get(keys.model), settings)


#: The histograms the population cut points come from, in `cuts_from_histograms` order.
CUT_HISTOGRAMS = ("last_purchase_day", "frequency", "monetary", "clv")


def cuts_from_histograms(
    day: dict[str, str], freq: dict[str, str], money: dict[str, str], value: dict[str, str]
) -> Cuts:
    """Population cut points from the bucket -> count hashes of `CUT_HISTOGRAMS`."""
    return Cuts(
        rfm=RfmCuts(
            recency_day=quintile_cuts(_histogram(day)),
            frequency=quintile_cuts(_histogram(freq)),
            monetary=quintile_cuts(_histogram(money)),
        ),
        clv=percentile_cuts(_histogram(value)),
    )


async def load_cuts(redis: Redis, keys: Keys) -> Cuts:
    """Recompute population cut points from the histograms."""
    day, freq, money, value = [
        {k: str(v) for k, v in (await shards.histogram(redis, keys, name)).items()}
        for name in CUT_HISTOGRAMS
    ]
    return cuts_from_histograms(day, freq, money, value)


async def load_severity_bands(
    redis: Redis, keys: Keys, percentiles: tuple[float, float, float],
    fallback: tuple[float, float, float],
) -> tuple[float, float, float]:
    """Severity bands at `percentiles` of every customer's value at risk (the rank set).

    The ``value_at_risk`` rank sets of every partition, merged by `shards.ranks_at`.
    """
    n = await shards.rank_size(redis, keys, "value_at_risk")
    if n == 0:
        return fallback
    found = await shards.ranks_at(redis, keys, "value_at_risk",
                                  [percentile_index(n, p) for p in percentiles])
    amounts = [0.0 if at is None else at for at in found]
    return population_bands(amounts, n, fallback)


async def read_statistics(
    redis: Redis, keys: Keys
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, float, int]]]:
    """The aggregated BG/NBD rows (x, t_x, first_day, n) and spend rows (n, spend, count)."""
    repeat_raw = {k: str(v) for k, v in (await shards.histogram(redis, keys, "bgnbd")).items()}
    spend_raw = {k: str(v) for k, v in (await shards.histogram(redis, keys, "spend")).items()}
    return statistics_rows(repeat_raw, spend_raw)


def statistics_rows(
    repeat_raw: dict[str, str], spend_raw: dict[str, str]
) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, float, int]]]:
    """The fit's rows from the ``bgnbd`` and ``spend`` histograms (bucket -> count)."""
    repeat_rows = []
    for field, count in repeat_raw.items():
        x, t_x, first = (int(p) for p in field.split(":"))
        repeat_rows.append((x, t_x, first, int(count)))
    spend_rows = []
    for field, count in spend_raw.items():
        n, bucket = (int(p) for p in field.split(":"))
        spend_rows.append((n, spend_bucket_value(bucket), int(count)))
    return repeat_rows, spend_rows


async def fit_and_store(
    redis: Redis, keys: Keys, settings: Settings, as_of: int | None = None
) -> dict[str, Any]:
    """Fit both models at `as_of` (default: the engine watermark) and store a new version."""
    if as_of is None:
        as_of = await engine_watermark(redis, keys, settings)
    if as_of is None:
        raise FitError("no event has been applied yet: nothing to fit")
    repeat_rows, spend_rows = await read_statistics(redis, keys)
    n = sum(r[3] for r in repeat_rows)
    if n < MIN_FIT_CUSTOMERS:
        raise FitError(f"only {n} customers with a purchase; need {MIN_FIT_CUSTOMERS}")
    previous = await load_model(redis, keys, settings)
    fit: PopulationFit = await asyncio.to_thread(
        fit_population, repeat_rows, spend_rows, as_of // MS_PER_DAY, previous
    )
    return await store_fit(redis, keys, fit, previous, as_of, n)


async def store_fit(
    redis: Redis, keys: Keys, fit: PopulationFit, previous: ValueModel, as_of: int, n: int
) -> dict[str, Any]:
    """Store a converged fit as a new model version (`FitError` if BG/NBD did not converge)."""
    if not fit.bg.converged:
        raise FitError(f"BG/NBD fit did not converge: {fit.bg.message}")
    gg = fit.gg.params if fit.gg is not None and fit.gg.converged else previous.gg
    version = int(await redis.incr(keys.model_version))
    doc = {
        "version": version,
        "as_of": format_time(as_of),
        "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),  # wall clock: model age
        "bgnbd": asdict(fit.bg.params),
        "gamma_gamma": asdict(gg),
        "bgnbd_log_likelihood": fit.bg.log_likelihood,
        "bgnbd_n": fit.bg.n,
        "gamma_gamma_log_likelihood": None if fit.gg is None else fit.gg.log_likelihood,
        "gamma_gamma_n": None if fit.gg is None else fit.gg.n,
        "gamma_gamma_converged": fit.gg is not None and fit.gg.converged,
        "time_unit": "days",
    }
    payload = orjson.dumps(doc)
    if is_cluster(redis):
        # The model and its history live in different slots of a cluster: the history
        # entry follows the model, each write atomic on its own key.
        await redis.set(keys.model, payload)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.lpush(keys.model_history, payload)
            pipe.ltrim(keys.model_history, 0, 99)
            await pipe.execute()
    else:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.model, payload)
            pipe.lpush(keys.model_history, payload)
            pipe.ltrim(keys.model_history, 0, 99)
            await pipe.execute()
    log.info("fitted value model v%d on %d customers as of %s", version, n, doc["as_of"])
    return doc
