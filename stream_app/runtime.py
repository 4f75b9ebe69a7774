"""What the agents and web views share inside one worker process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import faust
import mode
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError
from faust.types import TopicT
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from stream_app import metrics
from stream_app.connections import async_redis
from stream_app.domain.churn import churn_probability
from stream_app.domain.scoring import LinearScorer
from stream_app.domain.valuation import ValueModel
from stream_app.fence import TRANSIENT_REDIS_ERRORS, ServerFence, backoff, fenced_client
from stream_app.models import load_cuts, load_model, load_severity_bands
from stream_app.pipeline import Ingestor, LiveModel
from stream_app.settings import Settings
from stream_app.store import churn_models
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys

log = logging.getLogger(__name__)

# One quick retry hides a connection that went stale while idle; longer outages
# are ridden out by the callers' own retry loops, which never give up.
_CLIENT_RETRY = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1)


class TopicDeadLetters:
    """Dead-letter sink on a Faust topic; `send` waits for the broker's ack."""

    def __init__(self, topic: TopicT) -> None:
        self.topic = topic

    async def send(self, key: bytes | None, message: dict[str, Any]) -> None:
        delivery = await self.topic.send(key=key, value=message)
        await delivery


class TopicPublisher:
    """Publishes training examples, alerts and win-back triggers to their topics."""

    def __init__(self, topics: dict[str, TopicT]) -> None:
        self.topics = topics

    async def send(self, kind: str, key: bytes, message: dict[str, Any]) -> None:
        delivery = await self.topics[kind].send(key=key, value=message)
        await delivery


class Runtime:
    """Settings plus the Redis client and store, created inside the event loop."""

    def __init__(
        self,
        settings: Settings,
        dead_letter: TopicT,
        outputs: dict[str, TopicT] | None = None,
    ) -> None:
        self.settings = settings
        self._dead_letter = dead_letter
        self._outputs = outputs or {}
        self.churn_version = 0
        self._redis: Redis | None = None
        self._probe: Redis | None = None
        self._ingestor: Ingestor | None = None
        self.fence = ServerFence(cluster=settings.redis_cluster)
        self.timers = Timers()
        self.keys = Keys(partitions=settings.partitions)
        self.live = LiveModel(model=ValueModel(annual_discount_rate=settings.annual_discount_rate))

    @property
    def redis(self) -> Redis:
        """The worker's Redis client; it refuses a restarted server until `fence` accepts it."""
        if self._redis is None:
            self._redis = self.new_client()
        return self._redis

    def new_client(self) -> Redis:
        """A client as `redis` is (URL, credentials, TLS, fence), for another event loop.

        An asyncio client belongs to the loop it first connects on; the web server's own
        thread (CVM_WEB_IN_THREAD) makes one of these there and closes it when it stops.
        """
        return fenced_client(
            self.settings.redis_url, self.fence, health_check_interval=30,
            retry=_CLIENT_RETRY, **self.settings.redis_options(),
        )

    @property
    def probe(self) -> Redis:
        """A client outside the fence, to learn which server answers before accepting it."""
        if self._probe is None:
            self._probe = async_redis(
                self.settings, retry=_CLIENT_RETRY, socket_timeout=5, socket_connect_timeout=5,
            )
        return self._probe

    @property
    def store(self) -> CustomerStore:
        return self.ingestor.store

    @property
    def ingestor(self) -> Ingestor:
        if self._ingestor is None:
            store = CustomerStore(self.redis, self.keys)
            self._ingestor = Ingestor(
                self.settings,
                store,
                TopicDeadLetters(self._dead_letter),
                live=self.live,
                publisher=TopicPublisher(self._outputs) if self._outputs else None,
            )
        return self._ingestor

    async def refresh(self) -> bool:
        """Load the newest model and cut points; True if the model version changed."""
        model = await load_model(self.redis, self.keys, self.settings)
        changed = model.version != self.live.model.version
        self.live.model = model
        self.live.cuts = await load_cuts(self.redis, self.keys)
        if self.settings.alert_severity_bands is None:
            self.live.severity_bands = await load_severity_bands(
                self.redis, self.keys, self.settings.alert_severity_percentiles,
                self.ingestor.policy.alert.severity_bands,
            )
        await self._refresh_churn()
        return changed

    async def _refresh_churn(self) -> None:
        version = await churn_models.current_version(self.redis, self.keys)
        if version == self.churn_version:
            return
        snap = await churn_models.load(self.redis, self.keys, self.settings.signing_key)
        if snap is None:  # refused (logged once): keep scoring with the model loaded before
            self.churn_version = version
            return
        # The linear model scores a batch with one matrix-vector product; others row by row.
        self.live.scorer = LinearScorer.from_model(snap.model) or partial(
            churn_probability, snap.model
        )
        self.live.churn_version = f"churn-{snap.kind}-v{snap.version}"
        self.churn_version = snap.version

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._ingestor = None
        if self._probe is not None:
            await self._probe.aclose()
            self._probe = None


class FromStart(mode.Service):
    """Calls `tick` every `interval` seconds from the moment the app starts.

    A dependency of the app (``app.add_dependency``) starts with it, before the consumer
    joins its group; Faust's own timers and tasks begin only after the first assignment
    has been recovered, so a worker whose consumer never joins would never run them.
    """

    def __init__(self, tick: Callable[[], Awaitable[object]], interval: float) -> None:
        super().__init__()
        self._tick = tick
        self._interval = interval

    @mode.Service.task
    async def _every(self) -> None:
        while not self.should_stop:
            await self.sleep(self._interval)
            if not self.should_stop:
                await self._tick()


class Timers:
    """The worker's timers: each rides out errors, and all stop before the producer closes.

    Faust crashes the whole worker when a timer raises, and cancels timers only
    after it has closed the Kafka producer, so a timer that publishes while the
    worker stops fails on a closed producer. Timers registered here log an error
    and retry with backoff (a Redis or Kafka outage of any length), and `stop`
    (connected to the app's ``on_before_shutdown``, which Faust sends before it
    stops the producer) refuses new runs and waits for the running ones.
    """

    def __init__(self) -> None:
        self.stopping = False
        self._running = 0
        self._idle: asyncio.Event | None = None
        self._apps: set[int] = set()

    def register(
        self,
        app: faust.App,
        fun: Callable[[], Awaitable[None]],
        interval: float,
        on_leader: bool = False,
        name: str | None = None,
        from_start: bool = False,
    ) -> None:
        """Run `fun` every `interval` seconds (on the leader only with `on_leader`).

        Faust starts its timers only once the worker's first assignment has been
        recovered; `from_start` runs `fun` from the app's start instead (`FromStart`),
        for what must run while the consumer has not joined its group yet.
        """
        label = name or fun.__name__
        if id(app) not in self._apps:
            self._apps.add(id(app))
            # Sent by App.on_stop after the consumer stopped and before the producer closes.
            app.on_before_shutdown.connect(self.stop)

        async def tick() -> None:
            await self.run(label, fun)

        tick.__name__ = tick.__qualname__ = label
        if from_start:
            app.add_dependency(FromStart(tick, interval))
        else:
            app.timer(interval=interval, on_leader=on_leader, name=label)(tick)

    async def run(self, label: str, fun: Callable[[], Awaitable[None]]) -> bool:
        """Run `fun` until it succeeds or the worker stops; True if it succeeded."""
        attempt = 0
        while not self.stopping:
            self._enter()
            started = time.perf_counter()
            try:
                await fun()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a timer must never take the worker down
                delay = backoff(attempt)
                if attempt == 0:
                    log.warning("%s failed (%r); retrying with backoff", label, exc,
                                exc_info=not _transient(exc))
                attempt += 1
            else:
                if attempt:
                    log.info("%s succeeded again after %d failed attempts", label, attempt)
                return True
            finally:
                metrics.TIMER_SECONDS.labels(timer=label).observe(time.perf_counter() - started)
                self._leave()
            await asyncio.sleep(delay)
        return False

    def is_stopping(self) -> bool:
        """True once `stop` was called: long runs end early (what they wrote is complete)."""
        return self.stopping

    async def stop(self, *_: Any, **__: Any) -> None:
        """Refuse new runs and wait for the running ones to finish."""
        self.stopping = True
        while self._running:
            idle = self._idle = self._idle or asyncio.Event()
            await idle.wait()

    def _enter(self) -> None:
        self._running += 1
        if self._idle is not None:
            self._idle.clear()

    def _leave(self) -> None:
        self._running -= 1
        if not self._running and self._idle is not None:
            self._idle.set()


def _transient(exc: BaseException) -> bool:
    """An outage of Redis or Kafka rather than a bug (logged without a traceback)."""
    return isinstance(exc, (*TRANSIENT_REDIS_ERRORS, KafkaError, ProducerSendError))
