"""Redis memory per customer, as the real pipeline writes records, at large populations.

Method: `Ingestor.process` applies a full simulated year of a few hundred customers to a
private ``redis-server`` (no persistence); those records are the templates. A Lua script then
clones them server side (``COPY`` of the hash, ``HSET`` of the new ``customer_id`` of the same
length, ``ZADD`` of the template's scores to each rank set under the new id) until the
population reaches each size. Memory per customer is the ``INFO memory`` ``used_memory``
delta divided by the number of clones; ``MEMORY USAGE`` on samples splits it into the hash,
the rank sets and the keyspace's own overhead. The same cloning measures alternative layouts
built from the same templates (shorter field names, packed bookkeeping, fewer rank sets).

The private server runs with the ``hash-max-listpack-value`` the engine needs
(`stream_app.store.server.LISTPACK_VALUE_BYTES`); the first alternative shows the records as
Redis's default of 64 bytes stores them (hashtables).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from load.bench_profile import profile_pipeline, raw_records
from load.simulator import SimConfig, simulate
from stream_app.history_plan import HISTORY
from stream_app.offers import PRODUCTS
from stream_app.settings import Settings
from stream_app.store.keys import Keys
from stream_app.store.records import BOOK, from_ascii, pack_book, unpack_book

__all__ = ["measure_dedup", "measure_memory"]

RANKS = ("clv", "net_contribution", "value_at_risk")

# Clone i goes to partition i % partitions (the layout v2 key of that shard): the same key
# lengths and rank set sizes as murmur2 would give, without murmur2 in Lua.
_CLONE = """
local prefix, letter = ARGV[1], ARGV[2]
local start, count = tonumber(ARGV[3]), tonumber(ARGV[4])
local nt, nr, set_cid = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local partitions = tonumber(ARGV[8])
local ranks_at = 9
local tmpl_at = ranks_at + nr
for i = start, start + count - 1 do
  local j = i % nt
  local src, tid, tshard = ARGV[tmpl_at + 3 * j], ARGV[tmpl_at + 3 * j + 1],
    ARGV[tmpl_at + 3 * j + 2]
  local id = letter .. string.format('%07d', i)
  local tag = prefix .. ':{p' .. (i % partitions) .. '}:'
  local dst = tag .. 'customer:' .. id
  redis.call('COPY', src, dst)
  if set_cid ~= '' then redis.call('HSET', dst, set_cid, id) end
  for r = 0, nr - 1 do
    local score = redis.call('ZSCORE', prefix .. ':{p' .. tshard .. '}:rank:' .. ARGV[ranks_at + r],
      tid)
    if score then redis.call('ZADD', tag .. 'rank:' .. ARGV[ranks_at + r], score, id) end
  end
end
return count
"""

#: Fields a reader can derive from others (or from settings) at lookup time.
DERIVABLE = ("gross_margin", "net_contribution", "repeat_purchases", "contacts", "horizon_days",
             "recency_days", "model_version", "value_at_risk", "customer_id")
BOOKKEEPING = ("_v", BOOK)
#: The deduplication state: applied offsets per topic partition and recent event id hashes.
DEDUP = ("offsets", "event_ids")
#: The churn model's per-customer memory (decayed counters, pending snapshots, alert state).
CHURN = ("retention", "recent")


def without(fields: Mapping[str, str], parts: Sequence[str]) -> dict[str, str]:
    """The record with `parts` of its bookkeeping (`records.Book` attributes) left empty."""
    out = dict(fields)
    if BOOK in out:
        book = unpack_book(out[BOOK])
        empty = {"offsets": {}, "event_ids": (), "retention": b"", "recent": {},
                 "recent_at": None}
        changes = {k: empty[k] for k in parts}
        if "recent" in parts:
            changes["recent_at"] = None
        out[BOOK] = pack_book(dataclasses.replace(book, **changes))
    return out


@dataclass
class Template:
    customer_id: str
    fields: dict[str, str]
    scores: dict[str, float]


def _used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def _short_names(templates: Sequence[Template]) -> dict[str, str]:
    """A 1-2 character code per field name, most frequent names first."""
    counts: Counter[str] = Counter()
    for t in templates:
        counts.update(list(t.fields))
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    codes = list(alphabet) + [a + b for a in alphabet for b in alphabet]
    return {name: codes[i] for i, (name, _) in enumerate(counts.most_common())}


def _pack_bookkeeping(fields: Mapping[str, str]) -> dict[str, str]:
    out = {k: v for k, v in fields.items() if k not in BOOKKEEPING}
    # The applied offsets last, as ``topic/partition=offset,...`` for `pack` below.
    book = unpack_book(fields.get(BOOK, ""))
    offsets = ",".join(f"{topic}/{part}={o}" for (topic, part), o in sorted(book.offsets.items()))
    fields = {**fields, BOOK: pack_book(dataclasses.replace(book, offsets={}))}
    out["_"] = "|".join([fields.get("_v", ""), fields.get(BOOK, ""), offsets])
    return out


def _alternatives(templates: Sequence[Template]) -> dict[str, tuple[Callable[[Template], Any],
                                                                     tuple[str, ...], str, str]]:
    """name -> (record builder, rank sets kept, field holding the id or "", listpack limit).

    The limit is the server's ``hash-max-listpack-value`` while the layout is written: one
    value longer than it (64 bytes by default) turns the whole hash into a hashtable.
    """
    short = _short_names(templates)
    short["_"] = "_"
    # Topic names inside the packed offsets become their index.
    topic_codes: dict[str, str] = {}

    def pack(fields: Mapping[str, str]) -> dict[str, str]:
        packed = _pack_bookkeeping(fields)
        offsets = packed["_"].rsplit("|", 1)
        parts = []
        for item in filter(None, offsets[1].split(",")):
            topic, _, value = item.partition("/")
            code = topic_codes.setdefault(topic, str(len(topic_codes)))
            parts.append(f"{code}/{value}")
        packed["_"] = offsets[0] + "|" + ",".join(parts)
        return packed

    def rename(fields: Mapping[str, str]) -> dict[str, str]:
        return {short[k]: v for k, v in fields.items()}

    def drop(fields: Mapping[str, str]) -> dict[str, str]:
        return {k: v for k, v in fields.items() if k not in DERIVABLE}

    order = sorted({n for t in templates for n in pack(drop(t.fields))})

    def positional(t: Template) -> str:
        f = pack(drop(t.fields))
        return "\x1f".join(f.get(n, "") for n in order)

    cid = short["customer_id"]

    def lean(fields: Mapping[str, str]) -> dict[str, str]:
        return without(fields, CHURN)

    def positional_lean(t: Template) -> str:
        f = pack(drop(lean(t.fields)))
        return "\x1f".join(f.get(n, "") for n in order)

    return {
        "as written, Redis default listpack 64 (hashtables)": (
            lambda t: t.fields, RANKS, "customer_id", "64"),
        "as written, listpack 8192 (the engine's setting)": (
            lambda t: t.fields, RANKS, "customer_id", "8192"),
        "as written without the deduplication state (offsets, event ids), listpack 8192": (
            lambda t: without(t.fields, DEDUP), RANKS,
            "customer_id", "8192"),
        "as written without the churn fields, listpack 512": (
            lambda t: lean(t.fields), RANKS, "customer_id", "512"),
        "packed bookkeeping (public names kept), listpack 8192": (
            lambda t: pack(t.fields), RANKS, "customer_id", "8192"),
        "short names + packed bookkeeping, listpack 8192": (
            lambda t: rename(pack(t.fields)), RANKS, cid, "8192"),
        "short + packed + no derivable fields, listpack 8192": (
            lambda t: rename(pack(drop(t.fields))), RANKS, "", "8192"),
        "short + packed + no derivable, no churn fields, clv rank only, listpack 512": (
            lambda t: rename(pack(drop(lean(t.fields)))), ("clv",), "", "512"),
        "one string of positional values + clv rank only": (positional, ("clv",), "", "64"),
        "one string of positional values, no churn fields, no rank set": (
            positional_lean, (), "", "64"),
    }


def _write_templates(client: redis.Redis, keys: Keys, templates: Sequence[Template],
                     build: Callable[[Template], Any], ranks: Sequence[str]) -> None:
    pipe = client.pipeline(transaction=False)
    for t in templates:
        record = build(t)
        key = keys.customer(t.customer_id)
        if isinstance(record, str):
            pipe.set(key, record)
        else:
            pipe.hset(key, mapping=record)
        for r in ranks:
            if r in t.scores:
                pipe.zadd(keys.shard_of(t.customer_id).rank(r), {t.customer_id: t.scores[r]})
    pipe.execute()


def _clone(client: redis.Redis, keys: Keys, templates: Sequence[Template], ranks: Sequence[str],
           id_field: str, start: int, count: int, letter: str = "K", chunk: int = 20_000) -> None:
    script = client.register_script(_CLONE)
    tmpl_args: list[str] = []
    for t in templates:
        tmpl_args += [keys.customer(t.customer_id), t.customer_id,
                      keys.partition_of(t.customer_id)]
    done = 0
    while done < count:
        n = min(chunk, count - done)
        script(args=[keys.prefix, letter, start + done, n, len(templates), len(ranks), id_field,
                     keys.partitions, *ranks, *tmpl_args])
        done += n


def _breakdown(client: redis.Redis, keys: Keys, clones: int, delta: int, letter: str = "K",
               sample: int = 300, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    picked = rng.sample(range(clones), min(sample, clones))
    usage: list[int] = []
    encodings: Counter[str] = Counter()
    fields: list[int] = []
    for i in picked:
        key = keys.shard(i % keys.partitions).customer(f"{letter}{i:07d}")
        usage.append(int(client.memory_usage(key, samples=0) or 0))
        encodings[str(client.object("encoding", key))] += 1
        if client.type(key) == b"hash":
            fields.append(int(client.hlen(key)))
    ranks = {}
    for r in RANKS:
        card = sum(int(client.zcard(s.rank(r))) for s in keys.shards())
        if card:
            used = sum(int(client.memory_usage(s.rank(r), samples=0) or 0) for s in keys.shards())
            ranks[r] = round(used / card, 1)
    per = delta / clones
    hash_avg = sum(usage) / len(usage)
    return {
        "customers": clones,
        "used_memory_delta": delta,
        "bytes_per_customer": round(per, 1),
        "record_bytes_avg": round(hash_avg, 1),
        "record_encodings": dict(encodings),
        "fields_avg": round(sum(fields) / len(fields), 1) if fields else 0,
        "rank_bytes_per_member": ranks,
        "keyspace_and_other": round(per - hash_avg - sum(ranks.values()), 1),
    }


def _load_templates(client: redis.Redis, keys: Keys) -> list[Template]:
    templates = []
    for key in client.scan_iter(match=keys.customer_pattern, count=1000):
        cid = keys.customer_id(key)
        raw = client.hgetall(key)
        scores = {}
        for r in RANKS:
            s = client.zscore(keys.shard_of(cid).rank(r), cid)
            if s is not None:
                scores[r] = float(s)
        templates.append(Template(cid, {k.decode(): v.decode() for k, v in raw.items()}, scores))
    return sorted(templates, key=lambda t: t.customer_id)


def record_parts(templates: Sequence[Template]) -> dict[str, float]:
    """Mean bytes of text per record, by part: public field names and values, the product
    profile, the value history and the bookkeeping field `records.BOOK` (its parts as
    stored: the binary layout's share of its text)."""
    totals: Counter[str] = Counter()
    for t in templates:
        for name, value in t.fields.items():
            if name == BOOK:
                raw = len(value)
                book = unpack_book(value)
                parts = {
                    "churn snapshots and memory": len(book.retention),
                    "recent counters": 8 * sum(1 for v in book.recent.values() if v),
                    "event ids": 8 * len(book.event_ids),
                }
                binary = len(from_ascii(value))
                for part, n in parts.items():
                    totals[f"{BOOK}: {part}"] += n * raw / binary
                totals[f"{BOOK}: the rest (days, offsets, marker, due times, sentiment)"] += (
                    raw - sum(parts.values()) * raw / binary)
            elif name in (HISTORY, PRODUCTS):
                totals[name] += len(value)
            elif name.startswith("_"):
                totals[f"{name} (other bookkeeping)"] += len(value)
            else:
                totals["public field names"] += len(name)
                totals["public field values"] += len(value)
    return {k: round(v / len(templates), 1) for k, v in sorted(totals.items())}


def measure_memory(
    url: str,
    scales: Sequence[int] = (100_000, 1_000_000),
    template_customers: int = 600,
    alt_scale: int = 100_000,
    seed: int = 11,
    log: Callable[[str], None] = print,
    skip_alternatives: bool = False,
) -> dict[str, Any]:
    """Memory per customer at each scale, its breakdown, and the alternatives at `alt_scale`."""
    settings = Settings(redis_url=url)
    keys = Keys()
    # FLUSHALL of a million keys and MEMORY USAGE of million-member sets take seconds.
    client = redis.Redis.from_url(url, socket_timeout=600)
    client.flushall()
    events = list(simulate(SimConfig(n_customers=template_customers, days=365, seed=seed)))
    log(f"memory: {len(events):,} events of {template_customers} customers through "
        "Ingestor.process")
    asyncio.run(profile_pipeline(settings, raw_records(events, settings), timers=False))
    templates = _load_templates(client, keys)
    tmpl_usage = [int(client.memory_usage(keys.customer(t.customer_id), samples=0) or 0)
                  for t in templates]
    value_bytes: Counter[str] = Counter()
    for t in templates:
        value_bytes.update({k: len(v) for k, v in t.fields.items()})
    names = Counter(len(k) for t in templates for k in t.fields)
    values = Counter(len(v) for t in templates for v in t.fields.values())
    population = {}
    for key in client.scan_iter(match="cvm:*", count=1000):
        name = key.decode()
        kind = name.split(":")[2] if name.count(":") > 2 else ""
        if kind in ("hist", "rollup", "trends"):
            population[name] = int(client.memory_usage(key, samples=0) or 0)
    out: dict[str, Any] = {
        "template_parts_bytes_avg": record_parts(templates),
        "template_customers": len(templates),
        "template_events": len(events),
        "template_record_bytes_avg": round(sum(tmpl_usage) / len(tmpl_usage), 1),
        "template_fields_avg": round(sum(len(t.fields) for t in templates) / len(templates), 1),
        "template_name_bytes_avg": round(sum(k * n for k, n in names.items()) / len(templates), 1),
        "template_value_bytes_avg": round(
            sum(k * n for k, n in values.items()) / len(templates), 1),
        "template_largest_fields": [(k, round(v / len(templates), 1))
                                    for k, v in value_bytes.most_common(6)],
        "template_encodings": dict(Counter(
            str(client.object("encoding", keys.customer(t.customer_id))) for t in templates)),
        "population_keys_bytes": sum(population.values()),
        "hist_fields": {k: int(client.hlen(k)) for k in population if ":hist:" in k},
        # The value history (`history_plan.HISTORY`) is one field of the record, counted above.
        "history_field_bytes_avg": round(
            sum(len(t.fields.get(HISTORY, "")) for t in templates) / len(templates), 1),
        "history_field_bytes_max": max(len(t.fields.get(HISTORY, "")) for t in templates),
        "trends_keys_bytes": sum(v for k, v in population.items() if ":trends:" in k),
        "scales": [],
        "alternatives": [],
    }
    configured = str(next(iter(client.config_get("hash-max-listpack-value").values())))
    out["hash_max_listpack_value"] = configured
    base = _used(client)
    done = 0
    for scale in sorted(scales):
        log(f"memory: cloning to {scale:,} customers")
        _clone(client, keys, templates, RANKS, "customer_id", done, scale - done)
        done = scale
        out["scales"].append(_breakdown(client, keys, scale, _used(client) - base))
    alternatives = {} if skip_alternatives else _alternatives(templates)
    for name, (build, ranks, id_field, limit) in alternatives.items():
        client.flushall()
        client.config_set("hash-max-listpack-value", limit)
        _write_templates(client, keys, templates, build, ranks)
        client.config_set("hash-max-listpack-value", configured)
        base = _used(client)
        _clone(client, keys, templates, ranks, id_field, 0, alt_scale)
        row = _breakdown(client, keys, alt_scale, _used(client) - base)
        row["layout"] = name
        row["rank_sets"] = list(ranks)
        out["alternatives"].append(row)
        log(f"memory: {name}: {row['bytes_per_customer']} B/customer")
    client.flushall()
    client.close()
    return out


def measure_dedup(
    url: str,
    template_customers: int = 300,
    clones: int = 20_000,
    seed: int = 11,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Redis memory per customer of the deduplication state (offsets and event ids in ``_b``).

    The records of a simulated year written by `Ingestor.process` are cloned `clones` times
    as written and again without them; the difference of ``used_memory`` per
    customer is what the state costs.
    """
    settings = Settings(redis_url=url)
    keys = Keys()
    client = redis.Redis.from_url(url, socket_timeout=600)
    client.flushall()
    events = list(simulate(SimConfig(n_customers=template_customers, days=365, seed=seed)))
    log(f"dedup memory: {len(events):,} events of {template_customers} customers")
    asyncio.run(profile_pipeline(settings, raw_records(events, settings), timers=False))
    templates = _load_templates(client, keys)
    n = len(templates)
    out: dict[str, Any] = {
        "template_customers": n,
        "event_id_window": settings.event_id_window,
        "event_ids_avg": round(sum(len(unpack_book(t.fields.get(BOOK, "")).event_ids)
                                   for t in templates) / n, 1),
        "clones": clones,
    }
    builds: dict[str, Callable[[Template], Any]] = {
        "with": lambda t: t.fields,
        "without": lambda t: without(t.fields, DEDUP),
    }
    for name, build in builds.items():
        client.flushall()
        _write_templates(client, keys, templates, build, ())
        base = _used(client)
        _clone(client, keys, templates, (), "customer_id", 0, clones)
        row = _breakdown(client, keys, clones, _used(client) - base)
        out[f"bytes_per_customer_{name}"] = row["bytes_per_customer"]
        out[f"record_bytes_avg_{name}"] = row["record_bytes_avg"]
    out["dedup_bytes_per_customer"] = round(
        out["bytes_per_customer_with"] - out["bytes_per_customer_without"], 1)
    client.flushall()
    client.close()
    return out


if __name__ == "__main__":
    import argparse
    import json

    from load.bench_env import PrivateRedis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dedup", action="store_true", help="the deduplication state only")
    parser.add_argument("--scales", default="100000,1000000",
                        help="populations to measure, comma separated")
    parser.add_argument("--alternatives", type=int, default=0,
                        help="population of the alternative layouts (0: skip them)")
    cli = parser.parse_args()
    with PrivateRedis() as server:
        if cli.dedup:
            print(json.dumps(measure_dedup(server.url), indent=2))
        else:
            scales = tuple(int(n) for n in cli.scales.split(","))
            print(json.dumps(measure_memory(server.url, scales, alt_scale=cli.alternatives,
                                            skip_alternatives=cli.alternatives == 0),
                             indent=2))
