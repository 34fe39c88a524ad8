"""Fixtures of the CLI tests: a registry with a CURRENT model, a port nobody listens on."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector.model.bundle import ModelBundle
from detector.registry.store import ModelRegistry
from tests.unit.conftest import small_settings


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, small_bundle: ModelBundle) -> Path:
    path = tmp_path_factory.mktemp("models")
    ModelRegistry(small_settings(registry={"path": str(path)}).registry).publish(
        small_bundle, promote=True
    )
    return path


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so no one else takes it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture(autouse=True)
def restore_logging_and_signals() -> Iterator[None]:
    """`run` and `retrain` set up logging and signal handlers; give pytest its own back."""
    import logging
    import signal

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    kafka_level = logging.getLogger("kafka").level
    sigint, sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(kafka_level)
    signal.signal(signal.SIGINT, sigint)
    signal.signal(signal.SIGTERM, sigterm)
