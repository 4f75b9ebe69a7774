"""The ``cvm`` command: worker, lookup, demo."""

from __future__ import annotations

import argparse
import sys

import orjson
import redis

from stream_app.settings import Settings
from stream_app.store.records import customer_key, public_view


def _lookup(settings: Settings, args: argparse.Namespace) -> int:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    fields = client.hgetall(customer_key(args.customer_id))
    if not fields:
        print(f"cvm lookup: customer {args.customer_id!r} is unknown", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(public_view(fields), option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from stream_app import worker

    worker.run(settings)
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from stream_app import demo

    return demo.run(settings, customers=args.customers, rate=args.rate, seed=args.seed)


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``cvm``."""
    p = argparse.ArgumentParser(prog="cvm", description="Real-time customer value engine")
    sub = p.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run a stream worker (agents and web lookups)")
    w.set_defaults(func=_worker)

    lk = sub.add_parser("lookup", help="print a customer's record as JSON")
    lk.add_argument("customer_id")
    lk.set_defaults(func=_lookup)

    d = sub.add_parser("demo", help="worker + synthetic stream + live view")
    d.add_argument("--customers", type=int, default=2000)
    d.add_argument("--rate", type=float, default=500.0, help="events per second")
    d.add_argument("--seed", type=int, default=7)
    d.set_defaults(func=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cvm`` console script."""
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    return int(args.func(settings, args))


if __name__ == "__main__":
    raise SystemExit(main())
