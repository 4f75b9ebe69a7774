"""What the agents and web views share inside one worker process."""

from __future__ import annotations

from typing import Any

from faust.types import TopicT
from redis.asyncio import Redis

from stream_app.pipeline import Ingestor
from stream_app.settings import Settings
from stream_app.store.customers import CustomerStore


class TopicDeadLetters:
    """Dead-letter sink on a Faust topic; `send` waits for the broker's ack."""

    def __init__(self, topic: TopicT) -> None:
        self.topic = topic

    async def send(self, key: bytes | None, message: dict[str, Any]) -> None:
        delivery = await self.topic.send(key=key, value=message)
        await delivery


class Runtime:
    """Settings plus the Redis client and store, created inside the event loop."""

    def __init__(self, settings: Settings, dead_letter: TopicT) -> None:
        self.settings = settings
        self._dead_letter = dead_letter
        self._redis: Redis | None = None
        self._ingestor: Ingestor | None = None

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
            store = CustomerStore(self.redis)
            self._ingestor = Ingestor(self.settings, store, TopicDeadLetters(self._dead_letter))
        return self._ingestor

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._ingestor = None
