"""The ``cvm`` command: worker, lookups, model fit, demo, replay, evaluation and skip."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from redis import RedisError
from redis.asyncio import Redis

from stream_app import lookup
from stream_app.connections import ConnectionRefused, async_redis, redis_refusal
from stream_app.settings import Settings, SettingsError, redis_address


def _print(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


def _with_redis(
    settings: Settings, work: Callable[[Redis], Awaitable[int]]
) -> int:
    async def main() -> int:
        client = async_redis(settings)
        try:
            return await work(client)
        finally:
            await client.aclose()

    try:
        return asyncio.run(main())
    except lookup.LookupError_ as exc:
        print(f"cvm: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:
        refused = redis_refusal(settings, exc)
        message = refused or f"Redis at {redis_address(settings.redis_url)}: {exc}"
        print(f"cvm: {message}", file=sys.stderr)
        return 2


def _lookup(settings: Settings, args: argparse.Namespace) -> int:
    async def work(client: Redis) -> int:
        view = await lookup.customer(
            client, settings, args.customer_id,
            horizon_days=args.horizon_days, as_of=lookup.parse_as_of(args.as_of),
        )
        if view is None:
            print(f"cvm lookup: customer {args.customer_id!r} is unknown", file=sys.stderr)
            return 1
        _print(view)
        return 0

    return _with_redis(settings, work)


def _top(settings: Settings, args: argparse.Namespace) -> int:
    async def work(client: Redis) -> int:
        _print(await lookup.top(client, args.by, args.n))
        return 0

    return _with_redis(settings, work)


def _rollups(settings: Settings, args: argparse.Namespace) -> int:
    async def work(client: Redis) -> int:
        rows = await lookup.rollups(client, args.scope)
        if args.json:
            _print(rows)
            return 0
        key = "payoff" if args.scope == "campaign" else "net_contribution"
        cols = [args.scope, key, "revenue" if args.scope == "channel" else "attributed_revenue",
                "marketing_cost" if args.scope == "channel" else "cost",
                "customers" if args.scope == "channel" else "attributed_orders"]
        print("".join(f"{c:>20}" for c in cols))
        for row in rows:
            print("".join(f"{row.get(c, 0)!s:>20}" for c in cols))
        return 0

    return _with_redis(settings, work)


def _winback(settings: Settings, args: argparse.Namespace) -> int:
    async def work(client: Redis) -> int:
        _print(await lookup.winback_results(client, settings))
        return 0

    return _with_redis(settings, work)


def _fit(settings: Settings, args: argparse.Namespace) -> int:
    from stream_app.models import FitError, fit_and_store
    from stream_app.store.keys import Keys

    async def work(client: Redis) -> int:
        try:
            doc = await fit_and_store(
                client, Keys(), settings, as_of=lookup.parse_as_of(args.as_of)
            )
        except FitError as exc:
            print(f"cvm fit: {exc}", file=sys.stderr)
            return 1
        _print(doc)
        return 0

    return _with_redis(settings, work)


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from stream_app import worker

    try:
        worker.run(settings)
    except ConnectionRefused as exc:
        print(f"cvm worker: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from stream_app import demo

    return demo.run(settings, customers=args.customers, rate=args.rate, seed=args.seed,
                    duration=args.duration)


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``cvm``."""
    p = argparse.ArgumentParser(prog="cvm", description="Real-time customer value engine")
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run a stream worker (agents and web lookups)")
    w.set_defaults(func=_worker)

    lk = sub.add_parser("lookup", help="print a customer's record and predicted value as JSON")
    lk.add_argument("customer_id")
    lk.add_argument("--horizon-days", type=float, default=None,
                    help="CLV horizon (default CVM_HORIZON_DAYS)")
    lk.add_argument("--as-of", default=None,
                    help="RFC 3339 event time to value at (default: the engine watermark)")
    lk.set_defaults(func=_lookup)

    tp = sub.add_parser("top", help="top customers by clv, value_at_risk or net_contribution")
    tp.add_argument("--by", default="clv", choices=lookup.RANKINGS)
    tp.add_argument("-n", type=int, default=20)
    tp.set_defaults(func=_top)

    ru = sub.add_parser("rollups", help="which channels or campaigns pay off")
    ru.add_argument("scope", choices=("channel", "campaign"))
    ru.add_argument("--json", action="store_true")
    ru.set_defaults(func=_rollups)

    wb = sub.add_parser("winback", help="win-back results: treatment vs control return rates")
    wb.set_defaults(func=_winback)

    ft = sub.add_parser("fit", help="fit the value model now and store a new version")
    ft.add_argument("--as-of", default=None, help="RFC 3339 event time (default: watermark)")
    ft.set_defaults(func=_fit)

    d = sub.add_parser("demo", help="worker + synthetic stream + live view")
    d.add_argument("--customers", type=int, default=2000)
    d.add_argument("--rate", type=float, default=500.0, help="events per second")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    d.set_defaults(func=_demo)

    # replay and evaluate: arguments and handlers (`run(settings, args) -> int`) live in
    # their modules, which share the flags that say how to read a transaction log.
    from stream_app import evaluation, replay

    rp = sub.add_parser(
        "replay", help="publish a transaction log to the purchases topic in event-time order",
        description=replay.DESCRIPTION,
    )
    replay.add_replay_arguments(rp)
    rp.set_defaults(func=replay.run)

    ev = sub.add_parser(
        "evaluate", help="calibration/holdout test of the value model on a transaction log",
        description=evaluation.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluation.add_arguments(ev)
    ev.set_defaults(func=evaluation.run)

    from stream_app import backfill, follow, skip

    bf = sub.add_parser(
        "backfill", help="build the store from history files (CSV or Parquet), then hand over "
        "to Kafka at a cut-off time", description=backfill.DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backfill.add_arguments(bf)
    bf.set_defaults(func=backfill.run)

    sk = sub.add_parser(
        "skip", help="step over one input message the worker cannot get past (dead-letters it)",
        description=skip.DESCRIPTION,
    )
    skip.add_arguments(sk)
    sk.set_defaults(func=skip.run)

    al = sub.add_parser(
        "alerts", help="print the alerts and win-back triggers on Kafka (--follow: tail them)",
        description=follow.DESCRIPTION,
    )
    follow.add_arguments(al)
    al.set_defaults(func=follow.run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cvm`` console script."""
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.func is _worker:
            settings.check_web_auth()
    except SettingsError as exc:
        print(f"cvm: {exc}", file=sys.stderr)  # one line: the messages carry no secret
        return 2
    return int(args.func(settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
