"""What the agents and web views share inside one worker process."""

from __future__ import annotations

from functools import partial
from typing import Any

from faust.types import TopicT
from redis.asyncio import Redis

from stream_app.domain.churn import churn_probability
from stream_app.domain.valuation import ValueModel
from stream_app.models import load_cuts, load_model, load_severity_bands
from stream_app.pipeline import Ingestor, LiveModel
from stream_app.settings import Settings
from stream_app.store import churn_models
from stream_app.store.customers import CustomerStore
from stream_app.store.keys import Keys


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
        self._ingestor: Ingestor | None = None
        self.keys = Keys()
        self.live = LiveModel(model=ValueModel(annual_discount_rate=settings.annual_discount_rate))

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            self._redis = Redis.from_url(self.settings.redis_url, health_check_interval=30)
        return self._redis

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
        self.live.scorer = partial(churn_probability, snap.model)
        self.live.churn_version = f"churn-{snap.kind}-v{snap.version}"
        self.churn_version = snap.version

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._ingestor = None
