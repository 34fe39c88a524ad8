"""The kafka-python clients as we build them: failed connects give their sockets back."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator

import kafka.errors as Errors
import pytest
from kafka.net.inet import create_connection
from kafka.net.selector import NetworkSelector

import detector.stream.clients  # noqa: F401  (applies the fix on import, as the service does)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_gc() -> Iterator[None]:
    # The stock connect's sockets sit in reference cycles: a collection would free them
    # and hide the leak, so none runs while the test counts.
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_refused_connects_leave_no_open_socket(no_gc: None) -> None:
    # Given a loopback port nobody listens on (a broker that was killed)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    net = NetworkSelector()
    before = open_fds()
    # When kafka-python's network layer tries it 20 times, as a client reconnecting does
    for _ in range(20):
        with pytest.raises(Errors.KafkaConnectionError, match="ECONNREFUSED"):
            net.run(create_connection, net, "127.0.0.1", port)
    # Then no socket stays open (kafka-python 3.0.12 alone kept all 20 until a full
    # garbage collection: the fetch process grew 5 sockets per broker outage)
    assert open_fds() == before
    net.close()
