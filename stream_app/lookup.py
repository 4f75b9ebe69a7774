"""Read side shared by the CLI and the web views: records, rankings, roll-ups.

A lookup answers at the engine's watermark (or a given as-of time) over the
requested horizon. The stored record holds the values as of the customer's own
latest event, or of the watermark once the rescoring timer or a refit has been
by: when its as-of time, horizon and model version are the ones asked for, the
lookup answers from it as stored. Otherwise it revalues the customer with the
current model; the revaluations that concurrent lookups need are computed
together, in one vectorised call (`Revaluations`), so clients that arrive at
once do not queue behind one another's valuation on the event loop; their record
reads go to Redis together too, in one pipeline (`RecordReads`). What every
lookup needs but changes slowly (the watermarks, and without a worker the model,
the cut points and the affinity tables) a client keeps for a while (`Kept`), so
most lookups read the customer's record alone.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import orjson
from redis.asyncio import Redis

from stream_app import offers as product_offers
from stream_app.domain import outcomes
from stream_app.domain.events import format_time, parse_time
from stream_app.domain.ledger import CustomerState
from stream_app.domain.outcomes import WinbackOutcome
from stream_app.domain.tiers import Cuts
from stream_app.domain.valuation import Valuation, ValueModel, value_states
from stream_app.models import load_cuts, model_from_json, watermark_of
from stream_app.planner import rfm_fields, valuation_fields
from stream_app.settings import Settings
from stream_app.store import shards
from stream_app.store.customers import text
from stream_app.store.keys import Keys
from stream_app.store.records import format_money, public_view, valuation_state
from stream_app.store.shards import by_partition

RANKINGS = ("clv", "net_contribution", "value_at_risk")


class LookupError_(ValueError):
    """A lookup argument is not usable (400 over HTTP, exit 2 in the CLI)."""


def parse_as_of(raw: str | None) -> int | None:
    """An RFC 3339 as-of argument in epoch ms, or None."""
    if raw is None or raw == "":
        return None
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise LookupError_(f"as_of: {exc}") from None


def answers_as_stored(
    fields: dict[str, str], as_of: int, horizon_days: float, model_version: int
) -> bool:
    """True if the stored values are those of `as_of`, `horizon_days` and the model in use.

    >>> stored = {"as_of": "2026-01-02T00:00:00.000Z", "horizon_days": "365",
    ...           "model_version": "3"}
    >>> answers_as_stored(stored, parse_time("2026-01-02T00:00:00Z"), 365.0, 3)
    True
    >>> answers_as_stored(stored, parse_time("2026-01-02T00:00:00Z"), 90.0, 3)
    False
    """
    stored_as_of, stored_horizon = fields.get("as_of"), fields.get("horizon_days")
    if stored_as_of is None or stored_horizon is None:
        return False
    try:
        same_horizon = float(stored_horizon) == horizon_days
    except ValueError:
        return False
    return (
        same_horizon
        and fields.get("model_version") == str(model_version)
        and stored_as_of == format_time(as_of)
    )


class Revaluations:
    """The revaluations of concurrent lookups, computed together on the event loop.

    A lookup that needs one queues its customer; the first to queue schedules one
    valuation of the whole queue (`value_states`, vectorised over customers) after the
    callbacks already ready, so the lookups whose reads completed in the same pass of
    the loop share one call instead of each blocking the loop in turn.
    """

    def __init__(self) -> None:
        self._queue: list[tuple[ValueModel, CustomerState, int, float,
                                asyncio.Future[Valuation | None]]] = []

    async def value(
        self, model: ValueModel, state: CustomerState, as_of: int, horizon_days: float
    ) -> Valuation | None:
        """The customer's valuation, computed with the other lookups queued meanwhile."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Valuation | None] = loop.create_future()
        self._queue.append((model, state, as_of, horizon_days, future))
        if len(self._queue) == 1:
            loop.call_soon(self._run)
        return await future

    def _run(self) -> None:
        queue, self._queue = self._queue, []
        groups: dict[tuple[ValueModel, float], list[int]] = {}
        for i, (model, _, _, horizon, _) in enumerate(queue):
            groups.setdefault((model, horizon), []).append(i)
        for (model, horizon), members in groups.items():
            try:
                values: Sequence[Valuation | None] = value_states(
                    model, [(queue[i][1], queue[i][2]) for i in members], horizon
                )
            except Exception as exc:  # each waiting lookup gets the error
                for i in members:
                    if not queue[i][4].done():
                        queue[i][4].set_exception(exc)
                continue
            for i, value in zip(members, values, strict=True):
                if not queue[i][4].done():
                    queue[i][4].set_result(value)


_revaluations: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Revaluations] = (
    weakref.WeakKeyDictionary()
)


class RecordReads:
    """The record reads of concurrent lookups, sent together: one pipeline per loop pass.

    A lookup queues its customer's key; the first to queue schedules one pipeline of the
    whole queue after the callbacks already ready, so the lookups that start in the same
    pass of the loop share one round trip and one client call instead of one each. A key
    whose read Redis refuses (a forged value of the wrong type) fails its own lookup alone;
    a connection that fails fails every lookup in its pipeline, each with the error; a
    cancelled lookup leaves the others' reads alone.
    """

    def __init__(self) -> None:
        self._queue: list[tuple[str, asyncio.Future[dict[bytes, bytes]]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def hgetall(self, redis: Redis, key: str) -> dict[bytes, bytes]:
        """The hash at `key`, read in one pipeline with the others queued meanwhile."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[bytes, bytes]] = loop.create_future()
        self._queue.append((key, future))
        if len(self._queue) == 1:
            loop.call_soon(self._start, redis)
        return await future

    def _start(self, redis: Redis) -> None:
        queue, self._queue = self._queue, []
        task = asyncio.ensure_future(self._send(redis, queue))
        self._sending.add(task)  # held until done: the loop keeps only a weak reference
        task.add_done_callback(self._sending.discard)

    @staticmethod
    async def _send(
        redis: Redis, queue: list[tuple[str, asyncio.Future[dict[bytes, bytes]]]]
    ) -> None:
        waiting = [(key, future) for key, future in queue if not future.done()]
        if not waiting:
            return
        try:
            if len(waiting) == 1:
                replies = [await redis.hgetall(waiting[0][0])]
            else:
                async with redis.pipeline(transaction=False) as pipe:
                    for key, _ in waiting:
                        pipe.hgetall(key)
                    replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, future in waiting:
                future.cancel()
            raise
        except Exception as exc:  # each waiting lookup gets the error
            for _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), reply in zip(waiting, replies, strict=True):
            if future.done():
                continue
            if isinstance(reply, Exception):  # this key's error, not its neighbours'
                future.set_exception(reply)
            else:
                future.set_result(reply)


_record_reads: weakref.WeakKeyDictionary[Redis, RecordReads] = weakref.WeakKeyDictionary()


def record_reads(redis: Redis) -> RecordReads:
    """The client's `RecordReads`."""
    found = _record_reads.get(redis)
    if found is None:
        found = _record_reads[redis] = RecordReads()
    return found


def revaluations() -> Revaluations:
    """The running event loop's `Revaluations`."""
    loop = asyncio.get_running_loop()
    found = _revaluations.get(loop)
    if found is None:
        found = _revaluations[loop] = Revaluations()
    return found


T = TypeVar("T")


class Kept(Generic[T]):
    """A value read from Redis, kept per client for a while.

    A reader without a worker (the CLI, a read-only service) keeps what every lookup needs
    but changes slowly rather than reading it again for each lookup. Lookups that find it
    stale at the same time share one read: the first starts it, the others wait for it.
    """

    def __init__(self, ttl: Callable[[Settings], float]) -> None:
        self._ttl = ttl
        self._kept: weakref.WeakKeyDictionary[Redis, tuple[float, Keys, T]] = (
            weakref.WeakKeyDictionary())
        self._reading: weakref.WeakKeyDictionary[Redis, tuple[Keys, asyncio.Task[T]]] = (
            weakref.WeakKeyDictionary())

    def fresh(self, redis: Redis, keys: Keys, settings: Settings) -> T | None:
        """What this client read less than the time to live ago, or None."""
        kept = self._kept.get(redis)
        if (kept is None or kept[1] != keys
                or time.monotonic() - kept[0] >= self._ttl(settings)):
            return None
        return kept[2]

    def keep(self, redis: Redis, keys: Keys, value: T, read_at: float) -> None:
        """Keep `value`, read by this client at `read_at` (`time.monotonic`)."""
        self._kept[redis] = (read_at, keys, value)

    async def get(
        self, redis: Redis, keys: Keys, settings: Settings, load: Callable[[], Awaitable[T]]
    ) -> T:
        """The kept value, or `load()`'s, shared with the lookups that miss it meanwhile."""
        found = self.fresh(redis, keys, settings)
        if found is not None:
            return found
        reading = self._reading.get(redis)
        if reading is None or reading[0] != keys:
            read_at = time.monotonic()

            async def read() -> T:
                value = await load()
                self.keep(redis, keys, value, read_at)
                return value

            task = asyncio.ensure_future(read())
            # A read whose every waiter was cancelled still ends; nobody needs its error.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            task.add_done_callback(lambda t: self._forget(redis, t))
            reading = self._reading[redis] = (keys, task)
        return await asyncio.shield(reading[1])

    def _forget(self, redis: Redis, task: asyncio.Task[T]) -> None:
        reading = self._reading.get(redis)
        if reading is not None and reading[1] is task:
            del self._reading[redis]


_cuts: Kept[Cuts] = Kept(lambda s: s.refresh_interval_s)
_tables: Kept[product_offers.Tables] = Kept(lambda s: s.refresh_interval_s)
#: The value model and the watermarks, read with a record when these are stale.
_models: Kept[ValueModel] = Kept(lambda s: s.refresh_interval_s)
_marks: Kept[dict[tuple[str, int], int]] = Kept(lambda s: s.lookup_watermark_s)


async def shared_cuts(redis: Redis, keys: Keys, settings: Settings) -> Cuts:
    """The population's cut points, read at most every CVM_REFRESH_INTERVAL_S per client.

    A worker holds them and refreshes them at that interval; a reader without one (the
    CLI, a read-only service) keeps them as long, rather than reading four histograms
    again for every lookup.
    """
    return await _cuts.get(redis, keys, settings, lambda: load_cuts(redis, keys))


async def shared_tables(redis: Redis, keys: Keys, settings: Settings) -> product_offers.Tables:
    """The merged affinity tables, read at most every CVM_REFRESH_INTERVAL_S per client.

    As the cut points: a worker refreshes its tables at that interval, and a reader
    without one keeps them as long, rather than reading and merging every affinity
    counter again for every lookup.
    """
    return await _tables.get(redis, keys, settings,
                             lambda: product_offers.load_tables(redis, settings, keys))


async def _read(
    redis: Redis, settings: Settings, keys: Keys, customer_id: str, as_of: int | None,
    model: ValueModel | None,
) -> tuple[dict[str, str], int | None, ValueModel]:
    """The record, the as-of time asked for (else the watermark) and the model.

    The watermarks (unless `as_of` is given) and the model (unless given) come from this
    client's `Kept` copies while fresh; what is stale is read in the record's round trip.
    """
    marks = None if as_of is not None else _marks.fresh(redis, keys, settings)
    if model is None:
        model = _models.fresh(redis, keys, settings)
    key = keys.customer(customer_id)
    if (as_of is not None or marks is not None) and model is not None:
        fields = text(await record_reads(redis).hgetall(redis, key))
    else:
        read_at = time.monotonic()
        shard_list = list(keys.shards()) if as_of is None and marks is None else []
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(key)
            for shard in shard_list:
                pipe.hgetall(shard.watermarks)
            if model is None:
                pipe.get(keys.model)
            replies = await pipe.execute()
        fields = text(replies[0])
        if shard_list:
            marks = {}
            for raw in replies[1:1 + len(shard_list)]:
                marks.update(by_partition(text(raw)))
            _marks.keep(redis, keys, marks, read_at)
        if model is None:
            model = model_from_json(replies[-1], settings)
            _models.keep(redis, keys, model, read_at)
    if as_of is None and marks is not None:
        as_of = watermark_of(marks, settings)
    return fields, as_of, model


async def customer(
    redis: Redis,
    settings: Settings,
    customer_id: str,
    horizon_days: float | None = None,
    as_of: int | None = None,
    keys: Keys | None = None,
    model: ValueModel | None = None,
    cuts: Cuts | None = None,
    affinity: product_offers.Tables | None = None,
    offers_k: int | None = None,
    offers: bool = True,
) -> dict[str, Any] | None:
    """A customer's record, valued at `as_of` over `horizon_days`; None if unknown.

    A worker passes the `model`, `cuts` and `affinity` it holds; without them they
    are read from Redis and kept by the client for CVM_REFRESH_INTERVAL_S (`Kept`), the
    model in the record's round trip. Without `as_of` the lookup answers at the
    watermarks the client read less than CVM_LOOKUP_WATERMARK_S ago (else read with the
    record), or at the customer's own last event if that is later. The
    record's ``products`` is the product profile and ``offers`` the `offers_k` next best
    offers (default CVM_OFFERS_K); `offers` False leaves both out (a batch of lookups
    that only wants the values).
    """
    keys = keys or Keys(partitions=settings.partitions)
    fields, as_of, model = await _read(redis, settings, keys, customer_id, as_of, model)
    if not fields:
        return None
    horizon = float(settings.horizon_days if horizon_days is None else horizon_days)
    if not 0 < horizon <= 36_500:
        raise LookupError_(f"horizon_days: {horizon:g} is not within (0, 36500]")
    stored_last = fields.get("last_event_at")
    last_event = None if stored_last is None else parse_time(stored_last)
    if as_of is None or (last_event is not None and as_of < last_event):
        as_of = last_event
    valuation = None
    if as_of is not None and answers_as_stored(fields, as_of, horizon, model.version):
        view = public_view(fields)
        view["stored_as_of"] = fields.get("as_of")
        return await _with_offers(view, redis, settings, keys, fields, None, as_of,
                                  affinity, offers_k, offers)
    # The revalued fields replace the stored ones, and the record is typed once: typing
    # the parts separately would fill the per-reason and per-action counts with zeros.
    merged = dict(fields)
    if as_of is not None:
        state = valuation_state(customer_id, fields)
        valuation = await revaluations().value(model, state, as_of, horizon)
        if valuation is not None:
            if cuts is None:
                cuts = await shared_cuts(redis, keys, settings)
            stored_churn = fields.get("churn_probability")
            churn = None if stored_churn is None else float(stored_churn)
            merged.update(valuation_fields(valuation, cuts, churn))
            merged.update(rfm_fields(state, cuts, as_of))
    view = public_view(merged)
    view["stored_as_of"] = fields.get("as_of")
    return await _with_offers(view, redis, settings, keys, fields,
                              None if valuation is None else valuation.p_alive, as_of,
                              affinity, offers_k, offers)


async def _with_offers(
    view: dict[str, Any],
    redis: Redis,
    settings: Settings,
    keys: Keys,
    fields: dict[str, str],
    p_alive: float | None,
    as_of: int | None,
    affinity: product_offers.Tables | None,
    offers_k: int | None,
    offers: bool,
) -> dict[str, Any]:
    """`view` with the product profile and next best offers, unless `offers` is False."""
    if not offers:
        return view
    if affinity is None:
        affinity = await shared_tables(redis, keys, settings)
    view.update(product_offers.view(affinity, settings, fields, p_alive, as_of, offers_k))
    return view


async def customer_offers(
    redis: Redis,
    settings: Settings,
    customer_id: str,
    k: int | None = None,
    keys: Keys | None = None,
    model: ValueModel | None = None,
    affinity: product_offers.Tables | None = None,
) -> dict[str, Any] | None:
    """A customer's next best offers (and product profile) at the watermark; None if unknown."""
    if k is not None and not 1 <= k <= 100:
        raise LookupError_(f"k: {k} is not within 1..100")
    view = await customer(redis, settings, customer_id, keys=keys, model=model,
                          affinity=affinity, offers_k=k)
    if view is None:
        return None
    return {"customer_id": customer_id, "as_of": view.get("as_of"),
            "p_alive": view.get("p_alive"), "rfm_segment": view.get("rfm_segment"),
            "offers": view["offers"], "products": view["products"]}


async def top(
    redis: Redis, by: str, n: int, keys: Keys | None = None
) -> list[dict[str, Any]]:
    """The `n` highest customers of a ranking, with their key figures."""
    keys = keys or Keys()
    if by not in RANKINGS:
        raise LookupError_(f"by: {by!r} is not one of {', '.join(RANKINGS)}")
    if not 1 <= n <= 10_000:
        raise LookupError_(f"n: {n} is not within 1..10000")
    rows = await shards.top(redis, keys, by, n)
    async with redis.pipeline(transaction=False) as pipe:
        for member, _ in rows:
            pipe.hmget(
                keys.customer(member.decode() if isinstance(member, bytes) else member),
                "clv", "value_at_risk", "p_alive", "net_contribution", "value_tier",
                "rfm_segment", "last_event_at",
            )
        details = await pipe.execute() if rows else []
    out = []
    for rank, ((member, score), d) in enumerate(zip(rows, details, strict=True), start=1):
        d = [v.decode() if isinstance(v, bytes) else v for v in d]
        out.append({
            "rank": rank,
            "customer_id": member.decode() if isinstance(member, bytes) else member,
            by: score,
            "clv": None if d[0] is None else float(d[0]),
            "value_at_risk": None if d[1] is None else float(d[1]),
            "p_alive": None if d[2] is None else float(d[2]),
            "net_contribution": None if d[3] is None else float(d[3]),
            "value_tier": None if d[4] is None else int(d[4]),
            "rfm_segment": d[5],
            "last_event_at": d[6],
        })
    return out


async def rollups(redis: Redis, scope: str, keys: Keys | None = None) -> list[dict[str, Any]]:
    """Every channel or campaign roll-up, most profitable first."""
    keys = keys or Keys()
    if scope not in ("channel", "campaign"):
        raise LookupError_(f"scope: {scope!r} is not channel or campaign")
    names = await shards.rollup_names(redis, keys, scope)
    out = []
    for name in names:
        counts = await shards.rollup(redis, keys, scope, name)
        row: dict[str, Any] = {scope: name}
        for field, value in sorted(counts.items()):
            if field.endswith("_c"):
                row[field[:-2]] = float(format_money(value))
            else:
                row[field] = value
        if scope == "campaign":
            cost = counts.get("cost_c", 0)
            margin = counts.get("attributed_margin_c", 0)
            row["return_on_cost"] = None if cost == 0 else round((margin - cost) / cost, 3)
            row["payoff"] = float(format_money(margin - cost))
        else:
            buyers = counts.get("buyers", 0)
            row["net_per_customer"] = (
                None if not counts.get("customers")
                else round(counts.get("net_contribution_c", 0) / 100 / counts["customers"], 2)
            )
            row["buyers"] = buyers
        out.append(row)
    key = "payoff" if scope == "campaign" else "net_contribution"
    out.sort(key=lambda r: r.get(key) or 0, reverse=True)
    return out


async def winback_results(
    redis: Redis, settings: Settings, keys: Keys | None = None
) -> dict[str, Any]:
    """Win-back treatment against control over the closed outcomes, at the watermark.

    An outcome is closed when the customer returned (an order or a converted
    touch within the response window) or when the window passed; open ones are
    still in the customers' records and not counted here.
    """
    keys = keys or Keys(partitions=settings.partitions)
    raw = await shards.winback_outcomes(redis, keys)
    closed = [WinbackOutcome(**orjson.loads(v)) for v in raw.values()]
    watermark = watermark_of(await shards.watermarks(redis, keys), settings)
    return {"outcomes": len(closed), **outcomes.winback_results(closed, as_of=watermark)}
