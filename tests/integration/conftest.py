"""Integration fixtures: one real Kafka-protocol broker (Tansu) per test session."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from detector.stream.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def make_topic(broker: EmbeddedBroker) -> Callable[..., str]:
    def make(partitions: int = 1) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        broker.create_topics([name], partitions=partitions)
        return name

    return make
