"""A customer's value history: one compact point per period of event time.

A point holds the customer's CLV, P(alive), RFM segment, value tier and net
contribution. The newest point is the *open* one: it is rewritten with every
change in its period (each event or rescore of the customer), so it holds the
values as of the latest information in the period. When a change falls in a
later period, the periods from the open one up to the one before it are
*closed*: each is valued at its end (the first instant of the next period) with
the customer's state as it stood then, so a silent month still gets its point,
with P(alive) decayed over the silence. The caller does the valuing
(`due_closings` says which periods), since it holds the value model.

Periods are calendar months, ISO weeks (Monday to Sunday) or days, in UTC,
numbered from 1970 (`period_index`). Time is event time: the caller passes the
time a change is valued at, never the wall clock.

The history keeps at most `max_points` points (oldest dropped); a packed point
takes at most `POINT_MAX_BYTES` bytes (`pack`), so a record's history field is
bounded by ``2 + max_points * (POINT_MAX_BYTES + 1)`` bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Final

from stream_app.domain.events import MS_PER_DAY
from stream_app.domain.rfm import SEGMENTS

__all__ = [
    "NO_SEGMENT",
    "POINT_MAX_BYTES",
    "UNITS",
    "HistoryError",
    "Point",
    "advance",
    "due_closings",
    "format_point",
    "join",
    "pack",
    "parse_point",
    "period_end",
    "period_index",
    "period_label",
    "period_of_label",
    "shift_net",
    "split",
    "trim",
    "unpack",
]

#: Period units and their one-letter codes in a packed history.
UNITS: Final = {"month": "m", "week": "w", "day": "d"}
#: The segment of a customer without a purchase (no RFM values).
NO_SEGMENT: Final = "none"
#: The largest packed point: period (7 digits), CLV and net contribution in cents (16
#: digits and a sign each, the range a commit can sum), P(alive) in 1e-4 (5), segment
#: code (1), tier (2), and five separators.
POINT_MAX_BYTES: Final = 7 + 17 + 5 + 1 + 17 + 2 + 5
_SEGMENT_CODES: Final = {name: str(i) for i, name in enumerate(SEGMENTS)} | {NO_SEGMENT: "n"}
_CODE_SEGMENTS: Final = {code: name for name, code in _SEGMENT_CODES.items()}
_UNIT_NAMES: Final = {code: name for name, code in UNITS.items()}
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()


class HistoryError(ValueError):
    """A period unit or a packed history that cannot be used."""


@dataclass(frozen=True, slots=True)
class Point:
    """A customer's value in one period: money in cents, P(alive) in units of 1e-4."""

    period: int
    clv_c: int
    p_alive_m: int
    segment: str
    net_c: int
    tier: int

    def lost(self, p_alive_threshold: float) -> bool:
        """Whether the customer counts as lost: P(alive) below the threshold."""
        return self.p_alive_m < round(p_alive_threshold * 10_000)


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise HistoryError(f"period unit {unit!r} is not one of {', '.join(UNITS)}")


def period_index(t_ms: int, unit: str) -> int:
    """The number of the period (since 1970, UTC) that contains event time `t_ms`.

    >>> t = 1_772_409_600_000  # 2026-03-02T00:00:00Z, a Monday
    >>> period_index(t, "month"), period_index(t, "week"), period_index(t, "day")
    (674, 2931, 20514)
    >>> period_index(1_772_323_200_000 - 1, "month")  # 2026-02-28T23:59:59.999Z
    673
    """
    _check_unit(unit)
    day = t_ms // MS_PER_DAY
    if unit == "day":
        return day
    if unit == "week":
        return (day + 3) // 7  # 1970-01-01 was a Thursday; weeks start on Monday
    d = date.fromordinal(_EPOCH_ORDINAL + day)
    return (d.year - 1970) * 12 + d.month - 1


def _start_day(index: int, unit: str) -> int:
    if unit == "day":
        return index
    if unit == "week":
        return 7 * index - 3
    year, month = divmod(index, 12)
    return date(1970 + year, month + 1, 1).toordinal() - _EPOCH_ORDINAL


def period_end(index: int, unit: str) -> int:
    """The end of a period: the first instant (ms) of the next one.

    >>> period_end(673, "month") == 1_772_323_200_000  # 2026-03-01T00:00:00Z
    True
    """
    _check_unit(unit)
    return _start_day(index + 1, unit) * MS_PER_DAY


def period_label(index: int, unit: str) -> str:
    """A period's name: ``2026-03`` for a month, the first day for a week or a day.

    Labels of one unit sort as their periods do.

    >>> period_label(674, "month"), period_label(2931, "week"), period_label(20514, "day")
    ('2026-03', '2026-03-02', '2026-03-02')
    """
    _check_unit(unit)
    if unit == "month":
        year, month = divmod(index, 12)
        return f"{1970 + year:04d}-{month + 1:02d}"
    d = datetime.fromtimestamp(_start_day(index, unit) * 86_400, UTC).date()
    return d.isoformat()


def period_of_label(label: str, unit: str) -> int:
    """Inverse of `period_label`.

    >>> period_of_label("2026-03", "month"), period_of_label("2026-03-02", "week")
    (674, 2931)
    """
    _check_unit(unit)
    try:
        if unit == "month":
            year, month = label.split("-")
            return (int(year) - 1970) * 12 + int(month) - 1
        day = date.fromisoformat(label).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise HistoryError(f"period {label!r} is not a {unit} label") from None
    return period_index(day * MS_PER_DAY, unit)


def due_closings(points: Sequence[Point], current: int, max_points: int,
                 start: int | None = None) -> list[int]:
    """The periods to value at their end before a change in period `current`.

    The open point's period and every silent period after it, up to `current`
    (excluded); at most the `max_points` - 1 latest of them, since older ones
    would be dropped at once. Without points, `start` is the period of the first one
    (a change that spans several periods since); None: nothing to close.

    >>> p = Point(670, 0, 0, "new", 0, 50)
    >>> due_closings([p], 673, 24), due_closings([p], 670, 24), due_closings([], 673, 24)
    ([670, 671, 672], [], [])
    >>> due_closings([p], 700, 3), due_closings([], 673, 24, start=671)
    ([698, 699], [671, 672])
    """
    if points:
        start = points[-1].period
    if start is None or current <= start:
        return []
    return list(range(max(start, current - max_points + 1), current))


def advance(
    points: Sequence[Point], closings: Sequence[Point], current: Point
) -> tuple[Point, ...]:
    """The history after a change: `closings` (from `due_closings`) then the open point.

    A closing replaces the point of its period; the open point replaces the last
    point if it falls in the same or an earlier period (a change valued before the
    newest point, e.g. an event a rescore at a later watermark had passed by), and
    is appended otherwise. Nothing is dropped: see `trim`.

    >>> a, b = Point(670, 100, 9000, "new", 5, 50), Point(670, 90, 8000, "new", 5, 50)
    >>> c = Point(672, 300, 9900, "loyal", 20, 70)
    >>> [p.period for p in advance([a], [b, replace(b, period=671)], c)]
    [670, 671, 672]
    >>> advance([a], [], replace(c, period=669)) == (replace(c, period=670),)
    True
    """
    out = list(points)
    for closing in closings:
        if out and out[-1].period == closing.period:
            out[-1] = closing
        elif not out or out[-1].period < closing.period:
            out.append(closing)
    if out and current.period <= out[-1].period:
        out[-1] = replace(current, period=out[-1].period)
    else:
        out.append(current)
    return tuple(out)


def shift_net(
    points: Sequence[Point], deltas: Sequence[tuple[int, int]], unit: str, before: int
) -> tuple[Point, ...]:
    """Add late events' net contribution to the closed points of periods they fall in or precede.

    `deltas` are (event time, change of net contribution, cents) of events applied
    after the points were written; only the points of periods before `before` (the
    periods that stay closed) change: their net contribution at the period's end
    now includes the late event. Their CLV and P(alive) stay as valued then.

    >>> pts = [Point(670, 0, 0, "new", 100, 0), Point(671, 0, 0, "new", 100, 0)]
    >>> [p.net_c for p in shift_net(pts, [(period_end(669, "month"), -30)], "month", 671)]
    [70, 100]
    """
    if not deltas:
        return tuple(points)
    out = []
    for p in points:
        if p.period < before:
            end = period_end(p.period, unit)
            late = sum(d for t, d in deltas if t < end)
            if late:
                p = replace(p, net_c=p.net_c + late)
        out.append(p)
    return tuple(out)


def trim(points: Sequence[Point], max_points: int) -> tuple[Point, ...]:
    """The latest `max_points` points."""
    return tuple(points[-max_points:]) if max_points > 0 else ()


def format_point(p: Point) -> str:
    """One packed point: ``period,clv_c,p_alive_m,segment code,net_c,tier``.

    >>> format_point(Point(674, 123456, 9123, "champions", -1234, 87))
    '674,123456,9123,0,-1234,87'
    """
    return (f"{p.period},{p.clv_c},{p.p_alive_m},{_SEGMENT_CODES.get(p.segment, 'n')},"
            f"{p.net_c},{p.tier}")


def parse_point(part: str) -> Point:
    """Inverse of `format_point`."""
    period, clv_c, p_alive_m, seg, net_c, tier = part.split(",")
    return Point(int(period), int(clv_c), int(p_alive_m), _CODE_SEGMENTS.get(seg, NO_SEGMENT),
                 int(net_c), int(tier))


def split(text: str) -> tuple[str, list[str]]:
    """A packed history's unit and its points still packed, oldest first (see `pack`).

    A change usually touches only the newest point or two, so the others can stay
    text. Empty text is an empty month history.

    >>> split("m|674,1,2,0,3,4;675,1,2,0,3,4")
    ('month', ['674,1,2,0,3,4', '675,1,2,0,3,4'])
    """
    if not text:
        return "month", []
    code, _, body = text.partition("|")
    unit = _UNIT_NAMES.get(code)
    if unit is None:
        raise HistoryError(f"history unit code {code!r} is unknown")
    return unit, [part for part in body.split(";") if part]


def join(unit: str, parts: Sequence[str]) -> str:
    """Inverse of `split`."""
    _check_unit(unit)
    return f"{UNITS[unit]}|{';'.join(parts)}"


def pack(unit: str, points: Sequence[Point]) -> str:
    """A history as compact text: the unit's code, then one ``;``-separated point each.

    >>> pack("month", [Point(674, 123456, 9123, "champions", -1234, 87)])
    'm|674,123456,9123,0,-1234,87'
    >>> unpack(pack("week", [Point(2931, 0, 0, "none", 0, 0)]))
    ('week', (Point(period=2931, clv_c=0, p_alive_m=0, segment='none', net_c=0, tier=0),))
    """
    return join(unit, [format_point(p) for p in points])


def unpack(text: str) -> tuple[str, tuple[Point, ...]]:
    """Inverse of `pack`; empty text is an empty month history."""
    unit, parts = split(text)
    return unit, tuple(parse_point(part) for part in parts)
