"""kafka-python as the service runs it: failed connects give their sockets back, and a
producer whose topic vanished does not spin."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator

import kafka.errors as Errors
import pytest
from kafka.cluster import ClusterMetadata
from kafka.net.inet import create_connection
from kafka.net.selector import NetworkSelector
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.structs import TopicPartition

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


def accumulator_that_sent_to(tp: TopicPartition) -> RecordAccumulator:
    """An accumulator whose batch for ``tp`` was drained (sent): its queue stays, empty."""
    accumulator = RecordAccumulator()
    accumulator.append(tp, 0, None, b"alert", [])
    accumulator._batches[tp].popleft()
    return accumulator


def test_an_empty_queue_for_a_vanished_topic_asks_for_no_metadata() -> None:
    # Given a producer that once sent to alerts-3, and metadata that no longer knows the
    # topic (the broker was replaced, or the topic deleted)
    tp = TopicPartition("alerts", 3)
    accumulator = accumulator_that_sent_to(tp)
    cluster = ClusterMetadata()
    assert cluster.leader_for_partition(tp) is None
    # When the sender asks which partitions are ready
    _nodes, _delay, unknown_leaders_exist = accumulator.ready(cluster)
    # Then nothing waits for a leader, so it does not ask for metadata on every turn
    # (kafka-python 3.0.12 alone says True here, and its network thread spun at a core)
    assert unknown_leaders_exist is False


def test_a_waiting_batch_for_an_unknown_leader_still_asks_for_metadata() -> None:
    # Given a record waiting for alerts-3, whose leader is unknown
    tp = TopicPartition("alerts", 3)
    accumulator = RecordAccumulator()
    accumulator.append(tp, 0, None, b"alert", [])
    # When the sender asks which partitions are ready
    _nodes, _delay, unknown_leaders_exist = accumulator.ready(ClusterMetadata())
    # Then it is told to find the leader, as before
    assert unknown_leaders_exist is True
