"""Transports: how the loop reaches Kafka, chosen by ``kafka.client``.

    kafka-python  ConsumerFetcher in process, or ProcessFetcher (service.fetch_process);
                  KafkaProducer
    confluent     ConfluentFetcher, ConfluentProducer (confluent-kafka, librdkafka)

The loop sees the same three things on each: a ``Fetcher`` (poll a batch, commit, status;
rebalances call its handler), a producer (``send`` -> an acknowledgement future with
``is_done``, ``failed()``, ``exception``, ``get(timeout)``; ``flush``; ``close``;
``config["max_request_size"]``), and ``serve``, which delivers acknowledgements where
the client needs the loop's thread for that (librdkafka) and does nothing otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from detector.errors import ConfigError
from detector.settings import KafkaSettings, Settings
from detector.stream.fetcher import Fetcher, RebalanceHandler

Serve = Callable[[], None]


def no_serve() -> None:
    """The ``serve`` of a client that delivers acknowledgements on its own thread."""
    return None


def _confluent() -> Any:
    try:
        from detector.stream.transport import confluent
    except ImportError as exc:
        raise ConfigError(
            "kafka.client = 'confluent' needs the confluent-kafka package: "
            f"pip install 'detector[fast]' ({exc})"
        ) from exc
    return confluent


def open_producer(cfg: KafkaSettings) -> tuple[Any, Serve]:
    """The alerts/dead letters/samples producer of ``kafka.client``, and its ``serve``."""
    if cfg.client == "confluent":
        producer = _confluent().ConfluentProducer(cfg)
        return producer, producer.serve
    from detector.stream.clients import make_producer

    return make_producer(cfg), no_serve


def open_fetcher(settings: Settings, handler: RebalanceHandler) -> Fetcher:
    """The input consumer of ``kafka.client``, subscribed to the input topic."""
    if settings.kafka.client == "confluent":
        fetcher: Fetcher = _confluent().ConfluentFetcher(settings.kafka, handler)
        return fetcher
    if settings.service.fetch_process:
        from detector.stream.process_fetcher import ProcessFetcher

        return ProcessFetcher(settings, handler)
    from detector.stream.fetcher import ConsumerFetcher

    return ConsumerFetcher(settings.kafka, handler)
