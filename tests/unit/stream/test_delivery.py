"""Exactly-once delivery: what one transaction holds, when it aborts, and which settings refuse it.

Plain objects stand in for the producer here; the claims about Kafka itself (a crash at
each point of a transaction repeats nothing) are in tests/integration/test_exactly_once.py.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError, ProducerFencedError
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata

from detector.errors import ConfigError
from detector.settings import KafkaSettings
from detector.stream.delivery import (
    CRASH_POINTS,
    Transactions,
    consumer_overrides,
    transactional_id,
)
from detector.stream.fetch_process import _Child
from detector.stream.process_fetcher import read_message as _read
from tests.unit.conftest import small_settings

GROUP = ConsumerGroupMetadata("g", 7, "member-1", None)
A, B = TopicPartition("events", 0), TopicPartition("events", 1)


class FakeProducer:
    """Records the transactional calls in order; ``fail`` makes one of them raise."""

    def __init__(self, calls: list[Any], name: str, fail: dict[str, BaseException]) -> None:
        self.calls, self.name, self.fail = calls, name, fail
        self.config: dict[str, Any] = {}

    def _call(self, what: str, *args: Any) -> None:
        self.calls.append((self.name, what, *args))
        if what in self.fail:
            raise self.fail[what]

    def init_transactions(self) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def flush(self, timeout: float | None = None) -> None:
        self._call("flush")

    def send_offsets_to_transaction(self, offsets: Any, group: Any) -> None:
        self._call("offsets", offsets, group)

    def commit_transaction(self) -> None:
        self._call("commit")

    def abort_transaction(self) -> None:
        self._call("abort")

    def close(self, timeout: float | None = None) -> None:
        self._call("close")


@dataclass
class Batch:
    offsets: dict[TopicPartition, int]
    error: Exception | None = None
    checked: list[int] = field(default_factory=list)

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error


def transactions(fail: dict[str, BaseException] | None = None, **kafka: Any) -> tuple[Any, list]:
    calls: list[Any] = []
    made: list[dict[str, Any]] = []
    cfg = KafkaSettings(delivery="exactly_once", group_id="g", **kafka)

    def make(cfg: KafkaSettings, **overrides: Any) -> FakeProducer:
        made.append(overrides)
        name = "txn" if "transactional_id" in overrides else "advisory"
        return FakeProducer(calls, name, fail or {})

    t = Transactions(cfg, make=make)  # type: ignore[arg-type]
    t.made = made
    return t, calls


def test_a_transaction_holds_every_pending_batch_and_their_latest_offsets() -> None:
    # Given a fresh exactly-once delivery and two processed batches on two partitions
    t, calls = transactions(transactional_id="replica-0", transaction_timeout_ms=20_000)
    pending: deque[Batch] = deque([Batch({A: 10, B: 5}), Batch({A: 20})])

    # When they are committed with the consumer's group metadata
    committed = t.commit(pending, GROUP)

    # Then the producer was initialised under the replica's id and, in one transaction,
    # flushed, got the offsets after both batches with the group's generation, committed,
    # and the next transaction began; nothing is left pending
    assert committed and not pending and t.committed == 1
    assert t.made[0] == {"transactional_id": "replica-0", "transaction_timeout_ms": 20_000}
    txn = [c[1:] for c in calls if c[0] == "txn"]
    assert txn == [
        ("init",),
        ("begin",),
        ("flush",),
        ("offsets", {A: OffsetAndMetadata(20, "", -1), B: OffsetAndMetadata(5, "", -1)}, GROUP),
        ("commit",),
        ("begin",),
    ]
    # ...and samples and drift events have their own producer, outside any transaction
    assert t.advisory is not None and all(c[1] == "close" for c in calls if c[0] == "advisory")


def test_nothing_pending_opens_no_round_trip() -> None:
    t, calls = transactions()
    before = len(calls)
    assert t.commit(deque(), GROUP) is False
    assert len(calls) == before


def test_a_failed_send_aborts_and_commits_no_offset() -> None:
    # Given two batches, the second with a send the broker refused
    t, calls = transactions()
    refused = KafkaError("record too large")
    pending: deque[Batch] = deque([Batch({A: 10}), Batch({A: 20}, error=refused)])

    # When they are committed, Then the error surfaces, the transaction is aborted before any
    # offset joins it, and both batches stay pending (the session ends; they come again)
    with pytest.raises(KafkaError, match="record too large"):
        t.commit(pending, GROUP)
    whats = [c[1] for c in calls if c[0] == "txn"]
    assert whats[-1] == "abort" and "offsets" not in whats and "commit" not in whats
    assert len(pending) == 2 and t.committed == 0


@pytest.mark.parametrize("step", ["offsets", "commit"])
def test_a_broker_refusal_at_offsets_or_commit_aborts(step: str) -> None:
    # Given a broker that refuses the offsets (a stale generation: KIP-447) or the commit
    t, calls = transactions(fail={step: KafkaError(f"refused {step}")})
    pending: deque[Batch] = deque([Batch({A: 3})])
    # When the batch is committed, Then the transaction is aborted and the error raised
    with pytest.raises(KafkaError, match=f"refused {step}"):
        t.commit(pending, GROUP)
    assert [c[1] for c in calls if c[0] == "txn"][-1] == "abort"
    assert len(pending) == 1


def test_a_fenced_producer_says_why_and_does_not_try_to_abort(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a newer producer under the same transactional id (this replica is a zombie)
    t, calls = transactions(fail={"commit": ProducerFencedError()}, transactional_id="pod-3")
    # When it commits, Then it is told it was fenced, naming the id and the fix
    with pytest.raises(ProducerFencedError):
        t.commit(deque([Batch({A: 1})]), GROUP)
    assert "pod-3" in caplog.text and "kafka.transactional_id" in caplog.text
    assert "abort" not in [c[1] for c in calls]


def test_a_broken_abort_is_logged_not_raised_over_the_first_error() -> None:
    t, _ = transactions(fail={"flush": KafkaError("timeout"), "abort": KafkaError("gone")})
    with pytest.raises(KafkaError, match="timeout"):
        t.commit(deque([Batch({A: 1})]), GROUP)


def test_commits_are_due_once_per_commit_interval() -> None:
    # Given a commit interval of 250 ms
    t, _ = transactions(commit_interval_ms=250)
    # Then the first commit is due at once, and the next one a commit interval later
    assert t.due()
    t.commit(deque([Batch({A: 1})]), GROUP)
    assert not t.due()
    import time

    assert t.due(time.monotonic() + 0.3)


def test_an_unset_transactional_id_is_the_group_and_the_host() -> None:
    cfg = KafkaSettings(delivery="exactly_once", group_id="detector")
    assert transactional_id(cfg) == f"detector-{socket.gethostname()}"
    assert transactional_id(cfg.model_copy(update={"transactional_id": "p-1"})) == "p-1"


def test_only_exactly_once_reads_read_committed() -> None:
    assert consumer_overrides(KafkaSettings()) == {}
    eos = KafkaSettings(delivery="exactly_once")
    assert consumer_overrides(eos) == {"isolation_level": "read_committed"}


def test_the_default_stays_at_least_once() -> None:
    assert small_settings().kafka.delivery == "at_least_once"


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"delivery": "exactly_once", "acks": "1"}, "needs acks = 'all'"),
        (
            {
                "delivery": "exactly_once",
                "commit_interval_ms": 5000,
                "transaction_timeout_ms": 5000,
            },
            "above commit_interval_ms",
        ),
        ({"test_crash_point": "before_commit"}, "needs delivery = 'exactly_once'"),
        ({"delivery": "exactly-once"}, "kafka.delivery"),
        ({"delivery": "exactly_once", "transaction_timeout_ms": 1_000_000}, "900000"),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_the_key(
    kafka: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        small_settings(kafka=kafka)
    assert message in str(err.value)


def test_crash_points_are_in_transaction_order() -> None:
    assert CRASH_POINTS == ("in_transaction", "before_offsets", "before_commit", "after_commit")


def test_the_fetch_process_reports_group_metadata_before_each_assignment() -> None:
    # Given the fetch process's side with a consumer in generation 7
    r, w = os.pipe()
    to_service_r, to_service_w = Connection(r, writable=False), Connection(w, readable=False)
    r2, w2 = os.pipe()
    child = _Child(to_service_w, Connection(r2, writable=False), small_settings())

    class Consumer:
        def group_metadata(self) -> ConsumerGroupMetadata:
            return GROUP

    child.fetcher = Consumer()  # type: ignore[assignment]
    # When partitions are assigned
    child.on_assigned([A])
    # Then the service hears the new generation first, then the assignment
    assert _read(to_service_r) == ("group", GROUP)
    assert _read(to_service_r) == ("assigned", [A])
    os.close(w2)
