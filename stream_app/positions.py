"""Which input offsets a worker may apply next without leaving a hole behind.

Per-customer deduplication skips an event whose offset is at or below the last
offset the customer's record holds for that partition. That is sound only if a
partition is applied without holes: once offset N of a partition is applied,
every offset below N of that partition has been applied too. Otherwise the
events in the hole are skipped as "already applied" when they are read again,
and lost.

The consumer's position decides what is read next, and more than one party
moves it (the resume-from-Redis hook, Faust's own seek to the group's
committed offsets after a rebalance, periodic commits of acknowledged
offsets). `Positions` checks the outcome rather than each party: it knows the
last offset applied per assigned partition, taken from Redis at every
assignment and advanced with every batch, and names each partition whose
first record in a batch lies beyond the next offset expected.

Kafka offsets are not always contiguous (transaction markers, compacted or
deleted segments), so such a gap is only suspected: the caller checks whether
any record can be read in it, and records a gap that holds none as verified.

>>> p = Positions()
>>> p.reset({("t", 0): 9}, [("t", 0), ("t", 1)])
>>> p.holes([("t", 0, 10), ("t", 1, 0)])
{}
>>> p.advance([("t", 0, 10), ("t", 0, 11), ("t", 1, 0)])
>>> p.holes([("t", 0, 15), ("t", 1, 1)])
{('t', 0): (12, 15)}
>>> p.verified(("t", 0), 12, 15)
>>> p.holes([("t", 0, 15)])
{}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

TopicPartition = tuple[str, int]
#: (topic, partition, offset) of one record.
Coordinates = tuple[str, int, int]


class Positions:
    """The last offset applied per assigned input partition, and the holes a batch would leave.

    A partition absent from Redis's applied offsets counts as nothing applied
    (next offset 0); a partition that was not assigned at the last `reset` is not
    checked.
    """

    def __init__(self) -> None:
        self._last: dict[TopicPartition, int] = {}
        self._verified: set[tuple[TopicPartition, int, int]] = set()

    def reset(
        self, applied: Mapping[TopicPartition, int], assigned: Iterable[TopicPartition]
    ) -> None:
        """After an assignment: what Redis holds for each assigned partition."""
        self._last = {tp: applied.get(tp, -1) for tp in assigned}

    def holes(self, records: Iterable[Coordinates]) -> dict[TopicPartition, tuple[int, int]]:
        """Partitions whose first record here lies past the next expected offset.

        Returns ``{(topic, partition): (expected, first)}``; a gap already
        verified as holding no readable record is not reported again.
        """
        first: dict[TopicPartition, int] = {}
        for topic, partition, offset in records:
            tp = (topic, partition)
            if tp not in first or offset < first[tp]:
                first[tp] = offset
        out: dict[TopicPartition, tuple[int, int]] = {}
        for tp, offset in first.items():
            last = self._last.get(tp)
            if last is None:
                continue
            expected = last + 1
            if offset > expected and (tp, expected, offset) not in self._verified:
                out[tp] = (expected, offset)
        return out

    def advance(self, records: Iterable[Coordinates]) -> None:
        """A batch of these records was applied."""
        for topic, partition, offset in records:
            tp = (topic, partition)
            if tp in self._last and offset > self._last[tp]:
                self._last[tp] = offset

    def verified(self, tp: TopicPartition, expected: int, first: int) -> None:
        """Offsets ``expected`` up to ``first`` (excluded) of `tp` hold no readable record."""
        self._verified.add((tp, expected, first))
        if len(self._verified) > 10_000:
            self._verified.clear()
