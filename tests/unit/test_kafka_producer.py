"""The worker's Kafka producer is idempotent with acks=all (no broker needed)."""

from __future__ import annotations

from stream_app.app import create_app
from stream_app.kafka_producer import SCHEME, Producer, Transport
from stream_app.settings import Settings


def test_the_app_uses_the_idempotent_transport(tmp_path: object) -> None:
    app, _ = create_app(Settings(kafka_bootstrap_servers="h1:9092,h2:9094",
                                 data_dir=str(tmp_path)))
    assert [str(url) for url in app.conf.broker] == [f"{SCHEME}://h1:9092",
                                                     f"{SCHEME}://h2:9094"]
    assert isinstance(app.transport, Transport)
    producer = app.producer
    assert isinstance(producer, Producer)
    settings = {**producer._settings_default(), **producer._settings_extra()}
    assert settings["acks"] == "all" and settings["enable_idempotence"] is True
