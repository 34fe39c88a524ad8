"""The fetcher: batches as flat columns, the fetch process's handshakes and its failures."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import pytest
from kafka import TopicPartition

from detector.settings import Settings
from detector.stream.fetch_process import STALLED_EXIT_CODE, _Child, _ServiceGone
from detector.stream.fetcher import FetcherError, RecordBatch
from detector.stream.process_fetcher import ProcessFetcher
from detector.stream.process_fetcher import read_message as _read
from detector.stream.process_fetcher import write_message as _write
from tests.unit.conftest import small_settings


class Record(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


def records(first_offset: int, n: int) -> list[Record]:
    return [Record(first_offset + i, 1000 + i, None, b"v%d" % i) for i in range(n)]


def test_a_poll_becomes_flat_columns_with_the_offsets_to_commit() -> None:
    # Given a poll with two partitions and one empty partition
    a, b, empty = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2)
    polled = {a: records(10, 3), empty: [], b: records(7, 2)}

    # When it becomes a batch
    batch = RecordBatch.from_poll(polled)  # type: ignore[arg-type]

    # Then the columns keep poll order and each partition commits after its last record
    assert batch is not None and len(batch) == 5
    assert batch.partitions == [0, 0, 0, 1, 1]
    assert batch.offsets == [10, 11, 12, 7, 8]
    assert batch.values[3] == b"v0"
    assert batch.next_offsets == {a: 13, b: 9}


def test_an_empty_poll_is_no_batch() -> None:
    assert RecordBatch.from_poll({}) is None
    assert RecordBatch.from_poll({TopicPartition("t", 0): []}) is None


def test_a_batch_pickles_under_its_module_name() -> None:
    # The fetch process pickles batches; the service must load them under the same name.
    batch = RecordBatch.from_poll({TopicPartition("t", 0): records(0, 2)})  # type: ignore[dict-item]
    data = pickle.dumps(batch, protocol=5)
    assert b"detector.stream.fetcher" in data
    assert pickle.loads(data) == batch


class _YieldOnce:
    """What kafka-python's IO loop sees of a sleep: the coroutine suspends once."""

    def __await__(self) -> Any:
        yield


class FakeFetcher:
    """The fetch process's consumer side as far as a revocation sees it."""

    def __init__(self) -> None:
        self.commits: list[tuple[dict[TopicPartition, int], bool]] = []
        self.listener_commits: list[dict[TopicPartition, int]] = []
        self.sleeps = 0

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> int:
        if sync:
            # kafka-python raises this for a blocking call on its IO thread
            raise RuntimeError("Cannot block on net.run() from the IO thread itself")
        self.commits.append((offsets, sync))
        return len(self.commits)

    async def commit_in_listener(self, offsets: dict[TopicPartition, int]) -> None:
        self.listener_commits.append(offsets)

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        await _YieldOnce()

    def commit_results(self) -> list[tuple[int, str | None]]:
        return [(n, None) for n in range(1, len(self.commits) + 1)]

    def group_metadata(self) -> None:
        return None


def drive(coro: Any) -> None:
    """Run a coroutine that awaits only no-op awaitables (kafka-python's loop is not here)."""
    with pytest.raises(StopIteration):
        while True:
            coro.send(None)


def pipe() -> tuple[Connection, Connection]:
    r, w = os.pipe()
    return Connection(r, writable=False), Connection(w, readable=False)


def recv(conn: Connection) -> tuple[str, Any]:
    assert conn.poll(5), "nothing arrived"
    return _read(conn)


def test_a_revocation_waits_for_the_services_commit_without_blocking_the_io_loop() -> None:
    settings = small_settings()
    # Given the fetch process's side, and a service that answers a revocation with an
    # async commit, then a synchronous commit of its finished work, then "resume"
    to_child_r, to_child_w = pipe()
    from_child_r, from_child_w = pipe()
    child = _Child(from_child_w, to_child_r, settings)
    fake = FakeFetcher()
    child.fetcher = fake  # type: ignore[assignment]
    tp = TopicPartition("t", 0)

    # When the consumer revokes the partition (on kafka-python's IO thread) before the
    # service has answered
    coro = child.hand_over_async("revoked", [tp])
    for _ in range(3):
        coro.send(None)
    # Then the service heard of it and the listener yields the IO loop while it waits
    assert recv(from_child_r) == ("revoked", [tp])
    assert fake.sleeps == 3

    # When the service's answers arrive
    _write(to_child_w, "commit", ({tp: 41}, False, 7))
    _write(to_child_w, "commit", ({tp: 42}, True, 8))
    _write(to_child_w, "resume", None)
    drive(coro)

    # Then the sync commit was awaited in the listener (never the blocking call, which
    # kafka-python refuses on that thread) and confirmed before the revocation returned
    assert fake.listener_commits == [{tp: 42}]
    assert fake.commits == [({tp: 41}, False)]
    assert recv(from_child_r) == ("committed", None)
    # ...and the async commit's outcome goes back under the service's own ticket
    child.relay_commit_results()
    assert recv(from_child_r) == ("commit_result", (7, None))


def test_a_revocation_after_the_service_died_commits_nothing() -> None:
    settings = small_settings()
    # Given the service's ends of both pipes closed (the service process was killed)
    to_child_r, to_child_w = pipe()
    from_child_r, from_child_w = pipe()
    child = _Child(from_child_w, to_child_r, settings)
    fake = FakeFetcher()
    child.fetcher = fake  # type: ignore[assignment]
    to_child_w.close()
    from_child_r.close()

    # When the consumer revokes on its way out, Then the child does not block, and what it
    # raises says the service is gone (kafka-python swallows it; serve() would end quietly)
    with pytest.raises(_ServiceGone):
        drive(child.hand_over_async("revoked", [TopicPartition("t", 0)]))
    assert child.service_gone
    drive(child.hand_over_async("revoked", [TopicPartition("t", 0)]))  # later callbacks are no-ops
    child.on_assigned([])
    assert fake.commits == [] and fake.listener_commits == []


def unreachable_kafka(bootstrap_timeout_ms: int) -> Settings:
    """Settings naming a loopback port where no broker listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return small_settings(
        kafka={
            "bootstrap_servers": f"127.0.0.1:{port}",
            "bootstrap_timeout_ms": bootstrap_timeout_ms,
        }
    )


def test_a_fetch_process_that_cannot_reach_kafka_reports_why() -> None:
    # Given settings naming a port where no broker listens
    # When the fetch process starts
    fetcher = ProcessFetcher(unreachable_kafka(1000), handler=None)  # type: ignore[arg-type]
    try:
        # Then the service's next poll raises a FetcherError with the child's reason
        with pytest.raises(
            FetcherError, match=r"fetch process: .*Unable to bootstrap from .*127.0.0.1"
        ):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                fetcher.poll(500)
    finally:
        fetcher.close()
    assert fetcher._proc.returncode is not None  # and it has exited


def test_a_killed_fetch_process_ends_the_session_with_its_exit_code() -> None:
    # Given a fetch process that never gets to a broker
    fetcher = ProcessFetcher(unreachable_kafka(60_000), handler=None)  # type: ignore[arg-type]
    try:
        # When it is killed
        os.kill(fetcher.pid, 9)
        fetcher._proc.wait(10)

        # Then the next poll says it is gone and how it ended
        with pytest.raises(FetcherError, match=r"gone .*exit code -9"):
            fetcher.poll(1000)
    finally:
        fetcher.close()


def test_the_watchdog_counts_a_running_poll_and_a_join_but_not_a_hand_over() -> None:
    # Given the fetch process's side holding an assignment, between polls
    to_child_r, to_child_w = pipe()
    _from_child_r, from_child_w = pipe()  # (the read end stays open: sends succeed)
    child = _Child(from_child_w, to_child_r, small_settings())
    child.fetcher = FakeFetcher()  # type: ignore[assignment]
    child.on_assigned([])
    # Then nothing has stalled
    assert child.stalled(now=100.0) == (0.0, "poll has not returned")
    # When a poll started at t=10 s is still running at t=100 s
    child._poll_started = 10.0
    # Then it has stalled for 90 s
    assert child.stalled(now=100.0) == (90.0, "poll has not returned")
    # ...unless the poll is inside a revocation's hand-over, which waits for the service
    child._handing_over = True
    assert child.stalled(now=100.0) == (0.0, "")
    child._handing_over = False
    child._poll_started = None

    # When a hand-over ends and no assignment follows (polls return, the join never ends)
    _write(to_child_w, "resume", None)
    drive(child.hand_over_async("revoked", [TopicPartition("t", 0)]))
    ended = time.monotonic()
    # Then the join counts from the end of the hand-over, until the next assignment
    stalled_s, where = child.stalled(now=ended + 40.0)
    assert where == "group join has not completed" and 40.0 <= stalled_s < 41.0
    child.on_assigned([TopicPartition("t", 0)])
    assert child.stalled(now=ended + 40.0)[0] == 0.0


WEDGED_CHILD = """
import logging, sys, time
from tests.unit.conftest import small_settings
from tests.unit.stream.test_fetcher import pipe
from detector.logs import setup_logging
from detector.stream.fetch_process import _Child, keep_recent_coordinator_records
setup_logging()
to_child_r, _ = pipe()
_, from_child_w = pipe()
child = _Child(from_child_w, to_child_r, small_settings(kafka={"poll_stall_timeout_ms": %d}))
child.recent = keep_recent_coordinator_records()
logging.getLogger("kafka.coordinator.base").debug("Sending JoinGroup to %%s", "node 1")
child._poll_started = time.monotonic()  # a poll that never returns
child.watch(interval_s=0.05)
sys.exit(3)  # not reached: the watchdog ends the process
"""


def test_a_wedged_poll_ends_the_fetch_process_with_its_own_exit_code() -> None:
    # Given a fetch process whose Kafka poll never returns, and a 2 s stall limit
    started = time.monotonic()
    # When its watchdog runs
    proc = subprocess.run(
        [sys.executable, "-c", WEDGED_CHILD % 2000], capture_output=True, text=True, timeout=60
    )
    # Then the process ends with STALLED_EXIT_CODE after the limit, saying why in its log
    assert proc.returncode == STALLED_EXIT_CODE, proc.stderr
    assert time.monotonic() - started >= 2.0
    assert "poll has not returned" in proc.stderr and "poll_stall_timeout_ms" in proc.stderr
    # ...and with what the client's coordinator last logged, DEBUG included (which is not
    # printed while the client runs)
    assert "last 1 coordinator log lines" in proc.stderr
    assert "kafka.coordinator.base: Sending JoinGroup to node 1" in proc.stderr


RESETTING_CHILD = """
import sys
from detector.stream import fetch_process

class ResettingFetcher:  # a Kafka client whose broker socket was reset mid-poll
    def __init__(self, cfg, handler):
        pass
    def poll(self, timeout_ms):
        raise ConnectionResetError(104, "Connection reset by peer")
    def close(self):
        pass

fetch_process.ConsumerFetcher = ResettingFetcher
sys.exit(fetch_process.child_main(int(sys.argv[1]), int(sys.argv[2])))
"""


def test_a_connection_reset_in_the_kafka_client_is_reported_not_taken_for_the_service_gone() -> (
    None
):
    # Given a fetch process whose Kafka client raises ConnectionResetError out of poll (the
    # same type a broken pipe to the service raises)
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", RESETTING_CHILD, str(to_child_r), str(from_child_w)],
        pass_fds=(to_child_r, from_child_w),
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(to_child_r)
    os.close(from_child_w)
    to_child = Connection(to_child_w, readable=False)
    from_child = Connection(from_child_r, writable=False)
    # When it starts
    _write(to_child, "settings", small_settings())
    # Then it tells the service why it failed, logs it, and exits non-zero; it does not
    # exit 0 as if the service had gone away (which the service saw as "gone, still running")
    message = recv(from_child)
    _, stderr = proc.communicate(timeout=30)
    assert message == ("error", "ConnectionResetError: [Errno 104] Connection reset by peer")
    assert proc.returncode == 1
    assert "the fetch process failed" in stderr and "ConnectionResetError" in stderr
    to_child.close()
    from_child.close()


def test_the_fetch_process_starts_without_the_model_stack() -> None:
    # Given a fresh interpreter; When it imports the fetch process's entry module
    code = (
        "import sys, detector.stream.fetch_process; "
        "print(','.join(m for m in ('sklearn', 'scipy', 'detector.pipeline') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Then neither scikit-learn, scipy nor the pipeline were loaded (each child start
    # would pay for them in memory and seconds)
    assert out.stdout.strip() == ""
