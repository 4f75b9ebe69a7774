"""The worker's consumer in its group, as aiokafka's group coordinator keeps it.

Faust's aiokafka driver reads records from aiokafka's fetcher directly, never through
``AIOKafkaConsumer.getmany``, so nothing calls ``GroupCoordinator.check_errors``. When the
coordinator's background routine meets an error it does not handle by itself (a join the
broker refuses, a coordinator lookup that fails for good), it hands the error to its user
and waits until the user has taken it before it tries again. Under Faust it would wait for
ever: no heartbeat, no rejoin, while the worker's loop turns and reads nothing. `take_error`
takes such an error on the consumer's thread, so that the routine goes on and joins again
when it can; `membership` tells the probes (`stream_app.probes`) whether the consumer is in
its group, for a consumer that stays out anyway.

Both read private attributes of aiokafka (0.14): Faust and aiokafka expose none of this.
A consumer without them reads as unknown (None), never as a verdict.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

__all__ = ["Membership", "OutOfGroup", "membership", "take_error"]

log = logging.getLogger(__name__)


class OutOfGroup(RuntimeError):
    """The consumer stayed out of its group past CVM_OUT_OF_GROUP_S, or its group
    coordination ended: the worker reads nothing more, so it ends (`stream_app.probes`)."""


class Membership(NamedTuple):
    """What the consumer's group coordinator says of this worker's place in its group."""

    #: The broker gave the consumer a member id that it has not taken back since.
    member: bool
    #: The group generation the consumer last joined (-1 before the first join).
    generation: int
    #: The coordinator's background routine (join, heartbeat, commit) still runs.
    coordinating: bool


def _thread(app: Any) -> Any:
    # app._consumer, not app.consumer: the property would create a consumer.
    return getattr(getattr(app, "_consumer", None), "_thread", None)


def _coordinator(app: Any) -> Any | None:
    """aiokafka's group coordinator of `app`'s consumer; None before the consumer exists."""
    found = getattr(getattr(_thread(app), "_consumer", None), "_coordinator", None)
    return found if hasattr(found, "member_id") else None


def _routine_runs(found: Any) -> bool:
    task = getattr(found, "_coordination_task", None)
    return task is None or not task.done()


def membership(app: Any) -> Membership | None:
    """The coordinator's view of `app`'s consumer; None before the consumer exists.

    aiokafka keeps the member id the broker gave the consumer and resets it to "" when
    the broker answers that it no longer knows it (``reset_generation``): not through a
    broker outage, only once the broker is back and has forgotten the member. Its
    coordination routine ends only when the consumer closes or on an error it cannot
    handle. Plain attribute reads: safe from another thread.
    """
    found = _coordinator(app)
    if found is None:
        return None
    return Membership(member=bool(found.member_id),
                      generation=int(getattr(found, "generation", -1)),
                      coordinating=_routine_runs(found))


async def take_error(app: Any) -> BaseException | None:
    """Take the error aiokafka's coordinator waits for its user to take; None if none.

    Runs ``check_errors`` on the consumer's thread (aiokafka's objects belong to its
    loop) and logs what it took: the routine then tries again.
    """
    found = _coordinator(app)
    if (found is None or getattr(found, "_pending_exception", None) is None
            or not _routine_runs(found)):
        return None

    async def take() -> BaseException | None:
        try:
            found.check_errors()
        except Exception as exc:  # the error aiokafka handed over: ours to report
            return exc
        return None

    taken: BaseException | None = await _thread(app).call_thread(take)
    if taken is not None:
        log.warning("the consumer's group coordination stopped on %s: %s; taken, so that it "
                    "tries again", type(taken).__name__, taken)
    return taken
