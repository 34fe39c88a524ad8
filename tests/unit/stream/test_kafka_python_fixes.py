"""kafka-python as the service runs it: failed connects give their sockets back, a
producer whose topic vanished does not spin, a join once begun is finished, and bytes
read on a connection closed meanwhile are dropped without a traceback."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator

import kafka.errors as Errors
import pytest
from kafka.cluster import ClusterMetadata
from kafka.consumer.subscription_state import SubscriptionState
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.net.inet import create_connection
from kafka.net.selector import NetworkSelector
from kafka.net.transport import KafkaTCPTransport
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


class _JoinTask:
    def __init__(self, done: bool) -> None:
        self.is_done = done


def _leader_with_equal_snapshots() -> ConsumerCoordinator:
    # A coordinator as kafka-python leaves it once the in-flight join task has recorded the
    # new assignment snapshot: equal snapshots, the subscription joined, rejoin_needed off
    # (built without __init__: the check reads only these fields)
    c = ConsumerCoordinator.__new__(ConsumerCoordinator)
    c._subscription = SubscriptionState()
    c._subscription.subscribe(topics=["events"])
    c.config = {"group_id": "g", "api_version": (4, 0)}
    c._assignment_snapshot = {"events": {0}}
    c._metadata_snapshot = {"events": {0}}
    c._joined_subscription = {"events"}
    c.rejoin_needed = False
    c.rejoining = False
    c._join_task = None
    return c


def test_a_join_cut_off_by_a_poll_timeout_is_still_finished() -> None:
    # Given a leader whose metadata-triggered rejoin ran its listeners (rejoining) and whose
    # JoinGroup/SyncGroup task is still in flight when the poll's timer ran out
    c = _leader_with_equal_snapshots()
    c.rejoining = True
    c._join_task = _JoinTask(done=False)
    # Then the next poll still needs the join (to await the task and apply its assignment)
    assert c.need_rejoin()
    # ...and once the task is done but not yet taken up, too
    c._join_task = _JoinTask(done=True)
    assert c.need_rejoin()
    # When the join has ended (rejoining off, the task taken), Then nothing is needed
    c.rejoining, c._join_task = False, None
    assert not c.need_rejoin()


class _ClosingNet:
    """The IO loop's side as the read sees it: while the read waits, another thread closes
    the transport (``close()`` marks it closed, ``_close()`` drops its protocol)."""

    def __init__(self) -> None:
        self.transport: KafkaTCPTransport | None = None

    async def wait_read(self, sock: socket.socket) -> None:
        assert self.transport is not None
        self.transport._closed = True
        self.transport._protocol = None


def test_bytes_read_on_a_connection_closed_meanwhile_are_dropped_quietly() -> None:
    # Given a transport reading a socket with bytes waiting, whose connection another
    # thread closes while the read waits
    ours, broker_side = socket.socketpair()
    ours.setblocking(False)
    broker_side.sendall(b"a response nobody waits for")
    net = _ClosingNet()
    transport = KafkaTCPTransport(net, ours)
    net.transport = transport
    transport._read = True
    # When the read task runs
    reader = transport._read_from_sock()
    # Then it ends without an error (the stock one raised AttributeError on the None
    # protocol, and the IO loop logged it with a traceback)
    with pytest.raises(StopIteration):
        reader.send(None)
    ours.close()
    broker_side.close()
