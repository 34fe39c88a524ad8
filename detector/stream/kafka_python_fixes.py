"""Four fixes to kafka-python 3.0, applied once when ``detector.stream.clients`` is imported.

Each replaces one method, is measured by a test in ``tests/unit/stream/test_kafka_python_fixes.py``
that fails without it, does nothing when the method is missing (another kafka-python layout),
and replaces it only once (its replacement carries a marker it checks first).
"""

from __future__ import annotations

import time
from typing import Any


def close_sockets_of_failed_connects() -> None:
    """kafka-python 3.0's ``KafkaNetSocket.connect`` leaves the socket of a refused or timed
    out connect open: the exception's traceback holds it in a reference cycle, which only
    a full garbage collection frees. Measured on a broker killed and restarted: the fetch
    process held ~5 more sockets after each outage (4 -> 19 over four), i.e. one per
    attempt, so a long outage would run a replica out of file descriptors. Closing the
    socket when the connect fails frees it at once."""
    try:
        from kafka.net import inet
    except ImportError:  # a kafka-python without the 3.0 network layer
        return
    original = getattr(inet.KafkaNetSocket, "connect", None)
    if original is None or getattr(original, "_closes_on_failure", False):
        return

    async def connect(
        self: Any, net: Any, addrinfo: Any, socket_options: Any = (), timeout_at: Any = None
    ) -> Any:
        family, sock_type, proto, _canonname, sockaddr = addrinfo
        sock = self.socket(family, sock_type, proto)
        try:
            sock.setblocking(False)
            for option in socket_options:
                sock.setsockopt(*option)
            return await self.sock_connect(net, sock, sockaddr, timeout_at=timeout_at)
        # Refused, timed out or cancelled. Each way, the wait's io_guard has unregistered
        # the socket from the selector before this runs (a cancelled task closes its
        # stack from the top, the guard first), so closing cannot leave a stale entry.
        except BaseException:
            sock.close()
            raise

    connect._closes_on_failure = True  # type: ignore[attr-defined]
    inet.KafkaNetSocket.connect = connect


def count_only_waiting_batches_as_unknown_leaders() -> None:
    """kafka-python 3.0's ``RecordAccumulator.ready`` reports "unknown leaders exist" for
    any partition it ever sent to whose leader is unknown, even when nothing waits to be
    sent there (its queue is empty). The sender then asks for a metadata update on every
    turn, each request wakes its own poll at once, and the producer's network thread
    spins at a full core for as long as the partition stays unknown: found after a broker
    replacement, where the new broker had not yet created the alerts and samples topics
    (issue 16, item 5: 5,098 ``request_update`` calls from ``_send_producer_data`` in 1 s,
    90-99% of a core until the topics came back). A topic deleted under a running
    service would, by the same code, do it for ever. Apache Kafka's Java producer counts
    a partition only when a batch waits in it; so does this. The original still does all
    the work; the extra check runs only when it reports unknown leaders."""
    try:
        from kafka.producer.record_accumulator import RecordAccumulator
    except ImportError:
        return
    original = getattr(RecordAccumulator, "ready", None)
    if original is None or getattr(original, "_waiting_batches_only", False):
        return

    def ready(self: Any, cluster: Any, now: Any = None) -> Any:
        ready_nodes, next_ready_check, unknown_leaders_exist = original(self, cluster, now=now)
        if unknown_leaders_exist:
            # A read without the partition's lock is enough: a batch appended just after
            # it wakes the sender, and its next turn sees the batch.
            unknown_leaders_exist = any(
                queue and cluster.leader_for_partition(tp) in (None, -1)
                for tp, queue in list(self._batches.items())
            )
        return ready_nodes, next_ready_check, unknown_leaders_exist

    ready._waiting_batches_only = True  # type: ignore[attr-defined]
    RecordAccumulator.ready = ready


def finish_a_join_once_begun() -> None:
    """kafka-python 3.0's consumer rejoins only while ``need_rejoin()`` is true, and that
    compares the leader's assignment snapshot with its metadata snapshot. A join the
    leader starts because the metadata changed (the input topic appearing, say) is cut
    off by a short poll's timer with its JoinGroup -> SyncGroup task in flight; the task
    then records the new assignment snapshot, ``need_rejoin()`` turns false, and no later
    poll awaits the task again. Its ending never runs: the member stays REBALANCING with
    heartbeats off, its assignment is never applied nor given to the rebalance listener,
    it fetches nothing and the broker drops it a session timeout later (issue 17: CI of
    2026-12-07, broker log "Leader ... re-joining group during Stable", then "removing
    member ... on heartbeat expiration" 6 s later; the client logging "need_rejoin: False"
    with equal snapshots thousands of times a second). Apache Kafka's Java consumer loops
    on ``rejoinNeededOrPending()``: a join in flight or begun counts. So does this."""
    try:
        from kafka.coordinator.consumer import ConsumerCoordinator
    except ImportError:
        return
    original = getattr(ConsumerCoordinator, "need_rejoin", None)
    if original is None or getattr(original, "_or_pending", False):
        return

    def need_rejoin(self: Any) -> Any:
        task = getattr(self, "_join_task", None)
        if getattr(self, "rejoining", False) or (task is not None and not task.is_done):
            return True
        return original(self)

    need_rejoin._or_pending = True  # type: ignore[attr-defined]
    ConsumerCoordinator.need_rejoin = need_rejoin


def stop_reading_once_the_connection_is_closed() -> None:
    """kafka-python 3.0's ``KafkaTCPTransport._read_from_sock`` hands the bytes it received
    to ``self._protocol.data_received`` without checking that the transport still has a
    protocol: a close from another thread (the client's own, while the broker goes away)
    sets it to None between the read and the hand-over, and the IO loop logs
    ``AttributeError: 'NoneType' object has no attribute 'data_received'`` with a
    traceback (CI of 2026-12-07, the broker-lost test on Tansu). Bytes read on a
    connection that is closing are meant for nobody: this drops them and stops reading,
    as the loop's own ``not self._closed`` check would on its next turn."""
    try:
        import kafka.errors as errors
        from kafka.net import transport
    except ImportError:
        return
    original = getattr(transport.KafkaTCPTransport, "_read_from_sock", None)
    if original is None or getattr(original, "_stops_when_closed", False):
        return

    async def _read_from_sock(self: Any) -> Any:
        while self._read and not self._closed:
            await self._net.wait_read(self._sock)
            recvd_data, err = self._sock_recv()
            if err:
                return self.abort(error=err)
            protocol = self._protocol
            if protocol is None or self._closed:
                return None  # closed meanwhile: nobody is left to read these bytes
            self.last_read = time.monotonic()
            sensors = getattr(protocol, "_sensors", None)
            if sensors:
                sensors.bytes_received.record(len(recvd_data))
            try:
                protocol.data_received(recvd_data)
            except errors.KafkaProtocolError as e:
                return self.abort(error=e)
        return None

    _read_from_sock._stops_when_closed = True  # type: ignore[attr-defined]
    transport.KafkaTCPTransport._read_from_sock = _read_from_sock


def apply() -> None:
    close_sockets_of_failed_connects()
    count_only_waiting_batches_as_unknown_leaders()
    finish_a_join_once_begun()
    stop_reading_once_the_connection_is_closed()
