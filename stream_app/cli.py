"""The ``cvm`` command, built with Typer; tables and colours by Rich.

Every subcommand follows one pattern::

    @app.command(epilog=env_help(REDIS_ENV, "CVM_HORIZON_DAYS"))
    def lookup(
        customer_id: Annotated[str, typer.Argument(help="the customer's id")],
        as_json: JsonOption = False,
    ) -> None:
        \"\"\"One line of help, shown by ``cvm --help``.\"\"\"
        from stream_app import lookup as read        # heavy imports inside the body

        settings = load_settings()                   # one error line on a bad variable
        view = run_redis(settings, lambda r: read.customer(r, settings, customer_id))
        if view is None:
            fail(f"customer {customer_id!r} is unknown", "check the id", code=EXIT_FAILED)
        emit(view, as_json=as_json)                  # a table, or JSON with --json

- ``emit(data, as_json=...)`` prints a dict as a two-column table, a list of dicts as a
  table (``columns=`` picks and orders them), or either as JSON with ``--json``. Money has
  two decimals and thousands separators, rates are percentages (`format_value`).
- ``fail(what, todo, code=...)`` prints one line ``cvm <command>: <what>: <todo>`` on
  stderr and exits. Exceptions that escape a command are turned into such a line by
  `main` (`describe_error`); ``--debug`` (or ``CVM_DEBUG=1``) shows the traceback instead.
- Lists take ``-n/--limit`` (`LimitOption`); every command's epilog names the
  environment variables it reads (`env_help`).
- Imports of anything heavier than the standard library (redis, numpy, faust, rich)
  stay inside the command bodies so that ``cvm --help`` and ``cvm lookup`` start fast
  (a test holds the import cost of this module under a bound).

Porting an argparse-style command (``sub.add_parser(...)`` plus ``_handler(settings, args)``):
each ``add_argument`` becomes a typed parameter with ``help=``; the handler's body moves
into the function, with ``load_settings()`` for its settings, ``run_redis`` for its
``_with_redis``, ``emit(doc, as_json=as_json)`` for its ``_print(doc)`` and ``fail(...)``
for its ``print(..., file=sys.stderr); return 1``. Then add its name to `COMMANDS` and a
row to the README's command table (a test compares them with ``cvm --help``).

``replay``, ``evaluate``, ``skip`` and ``alerts`` keep their flags in their own modules
(argparse, shared with the tests through `parser`); their commands hand the arguments on.

Exit codes: 0 done; 1 the command ran but failed or found nothing (unknown customer,
failed fit, undelivered messages); 2 it could not run (bad arguments or settings,
Redis or Kafka unreachable or refusing the credentials); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from stream_app.settings import Settings

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES = (
    "Exit codes: 0 done; 1 ran but failed or found nothing; 2 could not run (bad "
    "arguments or settings, Redis or Kafka unreachable or refusing the login); "
    "130 interrupted."
)

#: Variables every command that talks to Redis reads.
REDIS_ENV = ("REDIS_URL", "REDIS_SSL_CA_CERTS", "REDIS_SSL_CERTFILE", "REDIS_SSL_KEYFILE",
             "CVM_REDIS_CLUSTER")
#: Variables every command that talks to Kafka reads.
KAFKA_ENV = (
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SSL_*", "KAFKA_SASL_*",
)


def env_help(*names: str | Iterable[str]) -> str:
    """The epilog naming the environment variables a command reads.

    >>> env_help(("REDIS_URL",), "CVM_HORIZON_DAYS")
    'Reads REDIS_URL, CVM_HORIZON_DAYS, NO_COLOR (see cvm config).'
    """
    flat: list[str] = []
    for n in names:
        flat.extend([n] if isinstance(n, str) else n)
    return f"Reads {', '.join([*flat, 'NO_COLOR'])} (see cvm config)."


app = typer.Typer(
    name="cvm",
    help="Real-time customer value engine: profitability, CLV, churn and win-back.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state: dict[str, Any] = {
    "debug": os.environ.get("CVM_DEBUG", "") in ("1", "true", "yes"),
    "command": "cvm",
}

JsonOption = Annotated[
    bool, typer.Option("--json", help="print JSON instead of a table (for scripts)")
]
LimitOption = Annotated[
    int, typer.Option("-n", "--limit", min=0, help="show at most N rows (0: all of them)")
]


# --------------------------------------------------------------------------- output


MONEY_FIELDS = frozenset({
    "clv", "value_at_risk", "net_contribution", "revenue", "margin", "gross_margin",
    "cost_to_serve", "marketing_cost", "cost", "payoff", "attributed_revenue",
    "attributed_margin", "regained_value", "regained_per_trigger", "offer_budget",
    "incremental_value", "clv_lost", "net_per_customer", "monetary", "avg_order_value",
    "expected_value", "returns", "refunds", "discounts", "cost_of_goods", "expected_spend",
})
RATE_FIELDS = frozenset({
    "p_alive", "churn_probability", "return_rate", "return_on_cost", "uplift",
    "default_margin_rate", "margin_rate",
})


#: Column headings of the tables (JSON keeps the field names).
LABELS = {
    "customer_id": "customer", "clv": "CLV", "p_alive": "P(alive)", "value_tier": "tier",
    "rfm_segment": "segment", "last_event_at": "last event", "net_contribution": "net",
    "churn_probability": "P(churn)",
}


def _label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " "))


def _kind(name: str) -> str:
    base = name.rsplit(".", 1)[-1]
    if base in RATE_FIELDS or base.endswith(("_rate", "_probability", "_share")):
        return "rate"
    if base in MONEY_FIELDS or base.endswith(("_revenue", "_margin", "_cost", "_value")):
        return "money"
    return "plain"


def format_value(name: str, value: Any) -> str:
    """How a table shows one field: money with two decimals, rates as percentages.

    >>> format_value("clv", 1234567.891), format_value("p_alive", 0.1627906)
    ('1,234,567.89', '16.3%')
    >>> format_value("orders", 12000), format_value("clv", None), format_value("clv", "175.4")
    ('12,000', '-', '175.40')
    >>> format_value("last_event_at", "2025-12-03T10:15:00.000Z")
    '2025-12-03 10:15'
    """
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        import orjson

        return orjson.dumps(value).decode()
    kind = _kind(name)
    timestamp = isinstance(value, str) and len(value) >= 16 and value[10:11] == "T"
    if name.endswith(("_at", "as_of")) and timestamp:
        return f"{value[:10]} {value[11:16]}"
    if kind != "plain" and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, int | float):
        if kind == "rate":
            return f"{value:.1%}"
        if kind == "money":
            return f"{value:,.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    # Rich honours NO_COLOR and leaves colours out when the stream is not a terminal; a
    # pipe or file gets whole rows (COLUMNS, else 200 wide) rather than 80 columns.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS") or 200)
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def print_json(doc: Any) -> None:
    """JSON on stdout, two-space indented (numbers as they are, for scripts)."""
    import orjson

    sys.stdout.write(
        orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
    )


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> Any:
    """A Rich table of `rows` (dicts); numbers are right-aligned and formatted."""
    from rich.table import Table

    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    t = Table(title=title, caption=caption, header_style="bold", title_justify="left")
    for c in cols:
        numeric = any(isinstance(r.get(c), int | float) and not isinstance(r.get(c), bool)
                      for r in rows) or _kind(c) != "plain"
        t.add_column(_label(c), justify="right" if numeric else "left", no_wrap=True)
    for r in rows:
        t.add_row(*(format_value(c, r.get(c)) for c in cols))
    return t


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def emit(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    as_json: bool,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> None:
    """Print a record (dict) or rows (list of dicts): a table, or JSON with ``--json``."""
    if as_json:
        print_json(data)
        return
    if isinstance(data, Mapping):
        from rich.table import Table

        t = Table(title=title, caption=caption, show_header=False, title_justify="left")
        t.add_column("field", style="bold")
        t.add_column("value", overflow="fold")
        for k, v in _flatten(data).items():
            t.add_row(k, format_value(k, v))
        _console().print(t)
        return
    if not data:
        _console().print(f"{title}: none" if title else "none")
        return
    _console().print(table(data, columns, title, caption))


def _command_name() -> str:
    return str(_state["command"])


def say(message: str) -> None:
    """A progress or status line on stderr (stdout stays for the result)."""
    print(f"{_command_name()}: {message}", file=sys.stderr, flush=True)


def fail(what: str, todo: str | None = None, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``cvm <command>: <what>: <todo>`` on stderr and exit with `code`."""
    text = f"{what}: {todo}" if todo else what
    for line in text.splitlines():  # settings: one line per unusable variable
        print(f"{_command_name()}: {line}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


# --------------------------------------------------------------------------- errors


def describe_error(exc: BaseException, settings: Settings | None = None) -> tuple[str, int] | None:
    """One line (and the exit code) for an error a person can act on; None for a bug."""
    from stream_app.settings import SettingsError, redis_address

    if isinstance(exc, SettingsError):
        return str(exc), EXIT_UNUSABLE
    mod = type(exc).__module__
    if mod.startswith("redis"):
        import redis

        from stream_app.connections import redis_refusal

        if settings is not None:
            refused = redis_refusal(settings, exc)
            if refused is not None:
                return str(refused), EXIT_UNUSABLE
            where = f"Redis at {redis_address(settings.redis_url)}"
        else:
            where = "Redis"
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            reason = str(exc).split(". ")[-1].rstrip(".") or type(exc).__name__
            return (f"{where} is not reachable ({reason}): start it (make stack-up) or set "
                    "REDIS_URL to a running server"), EXIT_UNUSABLE
        return f"{where}: {exc}", EXIT_UNUSABLE
    from stream_app.connections import ConnectionRefused

    if isinstance(exc, ConnectionRefused):
        return str(exc), EXIT_UNUSABLE
    if mod.startswith("confluent_kafka") or type(exc).__name__ == "KafkaException":
        where = "Kafka" if settings is None else f"Kafka at {settings.kafka_bootstrap_servers}"
        return (f"{where}: {exc}: start it (make stack-up) or set KAFKA_BOOTSTRAP_SERVERS"
                ), EXIT_UNUSABLE
    if type(exc).__name__ == "LookupError_":  # stream_app.lookup: an unusable argument
        return str(exc), EXIT_UNUSABLE
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}", EXIT_UNUSABLE
    return None


_loaded: list[Settings] = []


def load_settings() -> Settings:
    """The settings from the environment; one line per unusable variable, then exit 2."""
    from stream_app.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        fail(str(exc), code=EXIT_UNUSABLE)
    _loaded.append(settings)
    return settings


def run_redis(settings: Settings, work: Callable[[Redis], Awaitable[T]]) -> T:
    """Run `work` with an asyncio Redis client of `settings`, closing it afterwards."""
    import asyncio

    from stream_app.connections import async_redis

    async def main() -> T:
        client = async_redis(settings, socket_connect_timeout=5, socket_timeout=30)
        try:
            return await work(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


# --------------------------------------------------------------------------- commands


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("cvm-stream")
        except PackageNotFoundError:
            v = "unknown (not installed)"
        print(f"cvm {v}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True,
                           help="print the version and exit")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="show the traceback of an error (also CVM_DEBUG=1)")
    ] = False,
) -> None:
    """Real-time customer value engine: profitability, CLV, churn and win-back."""
    if debug:
        _state["debug"] = True


@app.command(epilog=env_help(KAFKA_ENV, REDIS_ENV, (
    "CVM_APP_ID", "CVM_PARTITIONS", "CVM_TOPIC_*", "CVM_WEB_HOST", "CVM_WEB_PORT",
    "CVM_API_TOKENS", "CVM_DATA_DIR", "CVM_BATCH_*", "CVM_ALERT_*", "CVM_WINBACK_*",
    "CVM_LOG_*", "every other CVM_* variable",
)))
def worker() -> None:
    """Run a stream worker: the agents, the timers and the web lookups (Ctrl-C stops)."""
    settings = load_settings()
    settings.check_web_auth()
    from stream_app import worker as stream_worker

    stream_worker.run(settings)


@app.command(epilog=env_help(REDIS_ENV, (
    "CVM_API_TOKENS", "CVM_PARTITIONS", "CVM_HORIZON_DAYS", "CVM_REFRESH_INTERVAL_S",
    "CVM_LOOKUP_WATERMARK_S", "CVM_OFFERS_K", "CVM_ALERT_SEVERITY_*",
)))
def serve(
    host: Annotated[str | None, typer.Option(
        help="address to listen on (default CVM_WEB_HOST)")] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 6067,
    processes: Annotated[int, typer.Option(
        min=1, max=64, help="server processes sharing the port (SO_REUSEPORT)")] = 1,
) -> None:
    """Serve the read API (lookups, offers, rankings) from Redis, without a worker."""
    from dataclasses import replace

    from stream_app import serve as read_server

    settings = load_settings()
    if host is not None:
        settings = replace(settings, web_host=host)
    settings.check_web_auth()
    say(f"serving the read API on http://{settings.web_host}:{port} "
        f"({processes} process{'es' if processes > 1 else ''}; Ctrl-C stops)")
    raise typer.Exit(read_server.run(settings, settings.web_host, port, processes))


@app.command(epilog=env_help(REDIS_ENV, ("CVM_HORIZON_DAYS", "CVM_APP_ID")))
def lookup(
    customer_id: Annotated[str, typer.Argument(help="the customer's id")],
    horizon_days: Annotated[
        float | None, typer.Option(help="CLV horizon in days (default CVM_HORIZON_DAYS)")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(help="RFC 3339 event time to value at (default: the engine's watermark)"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """A customer's record and predicted value (CLV, P(alive), churn, RFM)."""
    from stream_app import lookup as read

    settings = load_settings()
    when = read.parse_as_of(as_of)
    view = run_redis(settings, lambda r: read.customer(
        r, settings, customer_id, horizon_days=horizon_days, as_of=when))
    if view is None:
        fail(f"customer {customer_id!r} is unknown",
             "check the id (cvm top lists known customers)", code=EXIT_FAILED)
    emit(view, as_json=as_json, title=f"customer {customer_id}")


def keys_of(settings: Settings) -> Any:
    """The engine's Redis key names for these settings (layout v2: per input partition)."""
    from stream_app.store.keys import Keys

    return Keys(partitions=settings.partitions)


@app.command(epilog=env_help(("CVM_PARTITIONS", "CVM_APP_ID")))
def key(customer_id: Annotated[str, typer.Argument(help="the customer's id")]) -> None:
    """The Redis key of a customer's record (layout v2), for readers of Redis itself."""
    from stream_app.store.keys import customer_key

    settings = load_settings()
    print(customer_key(customer_id, settings.partitions))


TOP_COLUMNS = ("rank", "customer_id", "clv", "value_at_risk", "p_alive", "net_contribution",
               "value_tier", "rfm_segment", "last_event_at")


@app.command(epilog=env_help(REDIS_ENV))
def top(
    by: Annotated[str, typer.Option(
        help="ranking: clv, value_at_risk or net_contribution")] = "clv",
    limit: Annotated[int, typer.Option(
        "-n", "--limit", min=1, max=10_000, help="how many customers (1..10000)")] = 20,
    as_json: JsonOption = False,
) -> None:
    """The customers ranked highest by CLV, value at risk or net contribution."""
    from stream_app import lookup as read

    if by not in read.RANKINGS:
        fail(f"--by {by!r} is not a ranking", f"use one of {', '.join(read.RANKINGS)}",
             code=EXIT_UNUSABLE)
    settings = load_settings()
    rows = run_redis(settings, lambda r: read.top(r, by, limit, keys_of(settings)))
    emit(rows, as_json=as_json, columns=TOP_COLUMNS,
         title=f"Top {len(rows)} customers by {_label(by)}")


ROLLUP_COLUMNS = {
    "channel": ("channel", "net_contribution", "revenue", "marketing_cost", "customers",
                "buyers", "net_per_customer"),
    "campaign": ("campaign", "payoff", "attributed_revenue", "attributed_margin", "cost",
                 "return_on_cost", "attributed_orders"),
}


@app.command(epilog=env_help(REDIS_ENV))
def rollups(
    scope: Annotated[str, typer.Argument(help="channel or campaign")],
    limit: LimitOption = 20,
    as_json: JsonOption = False,
) -> None:
    """Which sales channels or campaigns pay off, most profitable first."""
    from stream_app import lookup as read

    if scope not in ROLLUP_COLUMNS:
        fail(f"{scope!r} is not a scope", "use channel or campaign", code=EXIT_UNUSABLE)
    settings = load_settings()
    rows = run_redis(settings, lambda r: read.rollups(r, scope, keys_of(settings)))
    shown = rows[:limit] if limit else rows
    caption = (f"{len(shown)} of {len(rows)} shown; -n 0 shows all"
               if len(shown) < len(rows) else None)
    emit(shown, as_json=as_json, columns=ROLLUP_COLUMNS[scope],
         title=f"{scope.capitalize()} roll-ups", caption=caption)


def winback_report(results: Mapping[str, Any]) -> dict[str, Any]:
    """The win-back results with 95 % intervals of the return rates and of the uplift.

    >>> r = winback_report({"treatment": {"triggers": 200, "returned": 60},
    ...                     "control": {"triggers": 50, "returned": 5}, "uplift": 0.2})
    >>> r["significant"], [round(x, 3) for x in r["uplift_ci95"]]
    (True, [0.072, 0.287])
    """
    from stream_app.domain.uplift import estimate_uplift, wilson

    doc = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in results.items()}
    for group in ("treatment", "control"):
        g = doc.get(group) or {}
        interval = wilson(int(g.get("returned", 0)), int(g.get("triggers", 0)))
        g["return_rate_ci95"] = None if interval is None else [interval.low, interval.high]
    t, c = doc.get("treatment") or {}, doc.get("control") or {}
    est = estimate_uplift(int(t.get("returned", 0)), int(t.get("triggers", 0)),
                          int(c.get("returned", 0)), int(c.get("triggers", 0)))
    doc["uplift_ci95"] = None if est is None else [est.uplift.low, est.uplift.high]
    doc["significant"] = None if est is None else est.significant
    doc["summary"] = (est.sentence() if est is not None else
                      "No uplift yet: both the treatment and the control group need closed "
                      "outcomes.")
    return doc


def _pct_interval(ci: Sequence[float] | None) -> str:
    return "-" if ci is None else f"{100 * ci[0]:.1f}% to {100 * ci[1]:.1f}%"


@app.command(epilog=env_help(REDIS_ENV, ("CVM_WINBACK_*",)))
def winback(as_json: JsonOption = False) -> None:
    """Win-back results: treatment against control return rates, uplift with a 95 % CI."""
    from stream_app import lookup as read

    settings = load_settings()
    doc = winback_report(run_redis(settings, lambda r: read.winback_results(r, settings)))
    if as_json:
        print_json(doc)
        return
    rows = [{"group": g, **{k: v for k, v in doc[g].items() if k != "return_rate_ci95"},
             "return_rate_95%_ci": _pct_interval(doc[g].get("return_rate_ci95"))}
            for g in ("treatment", "control")]
    console = _console()
    console.print(table(rows, ("group", "triggers", "returned", "return_rate",
                               "return_rate_95%_ci", "regained_value", "regained_per_trigger",
                               "offer_budget"), title="Win-back: treatment against control"))
    pending = doc.get("pending", 0)
    if doc.get("incremental_value") is not None:
        value = format_value("incremental_value", doc["incremental_value"])
        console.print(f"Incremental value (treated minus control, per trigger x triggers): "
                      f"{value}")
    console.print(doc["summary"])
    if pending:
        console.print(f"{pending:,} outcomes still open (window not closed) are not counted.")


@app.command(epilog=env_help(REDIS_ENV, ("CVM_HORIZON_DAYS", "CVM_ANNUAL_DISCOUNT_RATE")))
def fit(
    as_of: Annotated[
        str | None, typer.Option(help="RFC 3339 event time (default: the engine's watermark)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Fit the value model (BG/NBD and Gamma-Gamma) now and store a new version."""
    from stream_app import lookup as read
    from stream_app.models import FitError, fit_and_store

    settings = load_settings()
    when = read.parse_as_of(as_of)
    try:
        doc = run_redis(settings, lambda r: fit_and_store(r, keys_of(settings), settings,
                                                          as_of=when))
    except FitError as exc:
        fail(str(exc), "wait for more customers with repeat orders, then fit again")
    emit(doc, as_json=as_json, title="Value model")


@app.command(epilog="Secrets (passwords, tokens, keys) are shown as ***.")
def config(as_json: JsonOption = False) -> None:
    """The effective settings, grouped, with the variable each one comes from."""
    from stream_app.settings_env import describe

    settings = load_settings()
    rows = describe(settings)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    t = Table(title="Effective settings", header_style="bold", title_justify="left")
    t.add_column("group", no_wrap=True)
    t.add_column("variable", no_wrap=True)
    t.add_column("value", overflow="fold")
    last = None
    for row in rows:
        t.add_row(row["group"] if row["group"] != last else "", row["variable"], row["value"])
        last = row["group"]
    _console().print(t)


OFFER_COLUMNS = ("category", "kind", "expected_margin", "probability", "margin", "reason")


@app.command(epilog=env_help(REDIS_ENV, ("CVM_OFFERS_K", "CVM_AFFINITY_*", "CVM_PROFILE_*")))
def offers(
    customer_id: Annotated[str, typer.Argument(help="the customer's id")],
    k: Annotated[int | None, typer.Option(
        "-k", min=1, max=100, help="how many offers (default CVM_OFFERS_K)")] = None,
    as_json: JsonOption = False,
) -> None:
    """A customer's next best offers, by expected margin, each with its reason."""
    from stream_app import lookup as read

    settings = load_settings()
    view = run_redis(settings, lambda r: read.customer_offers(r, settings, customer_id, k=k))
    if view is None:
        fail(f"customer {customer_id!r} is unknown",
             "check the id (cvm top lists known customers)", code=EXIT_FAILED)
    if as_json:
        emit(view, as_json=True)
        return
    emit(view.get("offers") or [], as_json=False, columns=OFFER_COLUMNS,
         title=f"Next best offers for {customer_id}")


@app.command(epilog=env_help(REDIS_ENV, ("CVM_HISTORY_PERIOD", "CVM_HISTORY_MAX_POINTS")))
def history(
    customer_id: Annotated[str, typer.Argument(help="the customer's id")],
    as_json: JsonOption = False,
) -> None:
    """A customer's value history: CLV, P(alive), segment and net contribution per period."""
    from stream_app import history_lookup

    settings = load_settings()
    doc = run_redis(settings, lambda r: history_lookup.history(r, settings, customer_id))
    if doc is None:
        fail(f"customer {customer_id!r} is unknown",
             "check the id (cvm top lists known customers)", code=EXIT_FAILED)
    if as_json:
        emit(doc, as_json=True)
        return
    emit(doc["points"], as_json=False,
         title=f"Value history of {customer_id} (per {doc['period_unit']})")


TREND_COLUMNS = ("period", "customers", "total_clv", "mean_clv", "mean_p_alive",
                 "net_contribution", "net_contribution_in_period", "new", "lost", "won_back")


@app.command(epilog=env_help(REDIS_ENV, ("CVM_HISTORY_PERIOD",)))
def trends(
    periods: Annotated[int | None, typer.Option(
        min=1, max=1000, help="only the latest N periods")] = None,
    as_json: JsonOption = False,
) -> None:
    """Population trends per period: value, segments, new, lost and won-back customers."""
    from stream_app import history_lookup

    settings = load_settings()
    doc = run_redis(settings, lambda r: history_lookup.trends(r, settings, periods))
    if as_json:
        emit(doc, as_json=True)
        return
    emit(doc["periods"], as_json=False, columns=TREND_COLUMNS,
         title=f"Trends per {doc['period_unit']} (--json for segments, migration, "
               "channels and campaigns)")


UNPROFITABLE_COLUMNS = ("customer_id", "net_contribution", "clv", "primary_cause", "action",
                        "channel", "rfm_segment")


@app.command(epilog=env_help(REDIS_ENV, ("CVM_DEFAULT_MARGIN_RATE",)))
def unprofitable(limit: LimitOption = 20, as_json: JsonOption = False) -> None:
    """Loss-making customers: the largest losses, their causes and what to do."""
    from stream_app import history_lookup

    settings = load_settings()
    doc = run_redis(settings, lambda r: history_lookup.unprofitable(r, settings, limit or 50))
    if as_json:
        emit(doc, as_json=True)
        return
    emit(doc.get("top") or [], as_json=False, columns=UNPROFITABLE_COLUMNS,
         title=f"{doc.get('customers', 0)} loss-making customers, total loss "
               f"{format_value('loss', doc.get('total_loss', 0))} (--json for causes, "
               "channels and segments)")


# The commands whose flags live with their modules (argparse): the arguments are handed on.
PASSTHROUGH = {
    "replay": ("Publish a transaction log to the purchases topic in event-time order.",
               env_help(KAFKA_ENV, ("CVM_TOPIC_PURCHASES", "CVM_BASE_CURRENCY"))),
    "evaluate": ("Calibration/holdout test of the value model on a transaction log.",
                 env_help(KAFKA_ENV, REDIS_ENV, ("every CVM_* variable of the worker",))),
    "skip": ("Step over one input message the worker cannot get past (dead-letters it).",
             env_help(KAFKA_ENV, REDIS_ENV, ("CVM_APP_ID", "CVM_TOPIC_*"))),
    "alerts": ("Print the alerts and win-back triggers on Kafka (--follow: tail them).",
               env_help(KAFKA_ENV, ("CVM_TOPIC_ALERTS", "CVM_TOPIC_WINBACK"))),
    "backfill": ("Build the store from history files (CSV or Parquet), then hand over to "
                 "Kafka at a cut-off time.",
                 env_help(KAFKA_ENV, REDIS_ENV, ("CVM_APP_ID", "CVM_PARTITIONS", "CVM_TOPIC_*",
                                                 "every CVM_* variable of the worker"))),
}


def _passthrough(name: str, summary: str, epilog: str) -> None:
    def command(ctx: typer.Context) -> None:
        args = parser().parse_args([name, *ctx.args])
        settings = load_settings()
        code = int(args.func(settings, args))
        if code:
            raise typer.Exit(code)

    command.__doc__ = f"{summary} (cvm {name} -h lists its options)"
    app.command(
        name, epilog=epilog, add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                          "help_option_names": []},
    )(command)


for _name, (_summary, _epilog) in PASSTHROUGH.items():
    _passthrough(_name, _summary, _epilog)

#: Every subcommand, in the order of ``cvm --help`` (and of the README's table).
COMMANDS = ("worker", "serve", "lookup", "key", "top", "rollups", "winback", "fit", "config",
            "offers", "history", "trends", "unprofitable", *PASSTHROUGH)


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like the other commands'."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}: see {self.prog} -h", file=sys.stderr)
        raise SystemExit(EXIT_UNUSABLE)


def parser() -> argparse.ArgumentParser:
    """The argparse parser of the commands whose flags live with their modules."""
    from stream_app import backfill, evaluation, follow, replay, skip

    p = _Parser(prog="cvm")
    sub = p.add_subparsers(dest="command", required=True)
    for name, module, add, formatter in (
        ("replay", replay, replay.add_replay_arguments, argparse.HelpFormatter),
        ("evaluate", evaluation, evaluation.add_arguments, argparse.RawDescriptionHelpFormatter),
        ("skip", skip, skip.add_arguments, argparse.HelpFormatter),
        ("alerts", follow, follow.add_arguments, argparse.HelpFormatter),
        ("backfill", backfill, backfill.add_arguments, argparse.RawDescriptionHelpFormatter),
    ):
        summary, epilog = PASSTHROUGH[name]
        sp = sub.add_parser(name, help=summary, description=module.DESCRIPTION,
                            epilog=epilog, formatter_class=formatter)
        add(sp)
        sp.set_defaults(func=module.run)
    return p


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cvm`` console script: returns the exit code."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    names = set(getattr(command, "commands", {}))
    name = next((a for a in args if a in names), None)
    _state["command"] = f"cvm {name}" if name else "cvm"
    _state["debug"] = _state["debug"] or "--debug" in args[: args.index(name) if name else None]
    try:
        result = command.main(args=args, prog_name="cvm", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.TyperException as exc:  # Click's usage errors: bad or missing arguments
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message(), file=sys.stderr)
            return EXIT_UNUSABLE
        where = _state["command"]
        print(f"{where}: {exc.format_message()}: see {where} --help", file=sys.stderr)
        return EXIT_UNUSABLE
    except (typer.Abort, KeyboardInterrupt):
        print(f"{_state['command']}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if _state["debug"]:
            raise
        settings = _loaded[-1] if _loaded else None
        described = describe_error(exc, settings)
        if described is None:
            print(f"{_state['command']}: unexpected {type(exc).__name__}: {exc} (run with "
                  "--debug for the traceback and report it)", file=sys.stderr)
            return EXIT_FAILED
        text, code = described
        for line in text.splitlines():
            print(f"{_state['command']}: {line}", file=sys.stderr)
        return code
    return int(result) if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
