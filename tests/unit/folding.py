"""Fold a customer's events into a ledger state, one offset per event type, for domain tests."""

from __future__ import annotations

from collections.abc import Iterable

from stream_app.domain.events import Event, Source
from stream_app.domain.ledger import CustomerState, apply_event


def fold(events: Iterable[Event], cid: str = "C1") -> CustomerState:
    """The state after `events`, each from its type's own topic at the next offset."""
    state = CustomerState(cid)
    offsets: dict[str, int] = {}
    for ev in events:
        topic = type(ev).__name__
        offsets[topic] = offsets.get(topic, -1) + 1
        state = apply_event(state, ev, Source(topic, 0, offsets[topic]))
    return state
