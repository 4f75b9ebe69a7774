"""The garbage collector settings of a started worker (`stream_app.worker.tune_gc`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from stream_app.worker import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        if enabled:
            gc.enable()


def test_the_objects_of_the_start_are_frozen_and_young_collections_wait_longer(
    restored_gc: None,
) -> None:
    started = [{"kept": i} for i in range(1000)]  # tracked containers made before the start
    _, middle, old = gc.get_threshold()
    tune_gc()
    assert gc.get_freeze_count() >= len(started)
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)
    # A collection no longer walks them: they are in no generation.
    walked = {id(o) for o in gc.get_objects()}
    assert not any(id(d) in walked for d in started)


def test_garbage_cycles_made_after_the_start_are_still_collected(restored_gc: None) -> None:
    tune_gc(young=100)

    class Node:
        def __init__(self) -> None:
            self.me = self

    for _ in range(5000):
        Node()
    # The collector ran by itself (no gc.collect here): most of the cycles are gone.
    assert sum(type(o) is Node for o in gc.get_objects()) < 500
