"""Committing: when the processed offsets go to Kafka, and how, in each delivery mode.

    at_least_once  acknowledged batches -> async commit every commit_interval_ms (a failed
                   one merged into the next) -> drain: flush, then one sync commit
    exactly_once   every batch since the last transaction -> sends checked -> offsets
                   in the transaction -> commit (``detector.stream.delivery``)

The book of what may be committed is ``detector.stream.offsets`` (no Kafka); this module
talks to the session's fetcher and producer, and keeps /readyz's commit age.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition

from detector.health import HealthState
from detector.metrics import ServiceMetrics
from detector.pipeline.process import Stage
from detector.settings import Settings
from detector.stream.delivery import Transactions
from detector.stream.fetcher import Fetcher
from detector.stream.offsets import OffsetBook
from detector.stream.transport import Serve, no_serve

log = logging.getLogger(__name__)

# After a failed async commit its offsets go into the next one, sent no sooner than this.
COMMIT_RETRY_S = 1.0


class Committer:
    """The commits of one service, across its Kafka sessions."""

    def __init__(
        self,
        settings: Settings,
        metrics: ServiceMetrics,
        health: HealthState,
        stage: Stage,
        on_abort: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self._stage = stage
        self._on_abort = on_abort  # a transaction aborted: its batches come again
        self.offsets = OffsetBook()  # processed -> acknowledged -> committed
        self._next_commit = 0.0
        self.fetcher: Fetcher | None = None
        self.producer: Any = None
        self.transactions: Transactions | None = None
        self.serve: Serve = no_serve  # acknowledgements arrive here (confluent)

    def start(self) -> None:
        """A new session: nothing processed in it yet."""
        self.offsets.clear()
        self.health.uncommitted_since = None

    def attach(
        self,
        fetcher: Fetcher,
        producer: Any,
        transactions: Transactions | None,
        serve: Serve,
    ) -> None:
        self.fetcher, self.producer, self.transactions, self.serve = (
            fetcher,
            producer,
            transactions,
            serve,
        )

    def detach(self) -> None:
        self.fetcher, self.producer, self.transactions, self.serve = None, None, None, no_serve
        self.health.uncommitted_since = None  # redelivered to the next owner or session

    def processed(self, offsets: dict[TopicPartition, int], futures: list[Any]) -> None:
        self.offsets.processed(offsets, futures)

    def ready(self) -> None:
        """Commit offsets of the leading batches whose sends are all acknowledged.

        Rate-limited to ``commit_interval_ms``: each commit is a broker round trip, and a
        commit that waits a few ms only widens what a crash would redeliver.
        """
        self.serve()
        self.take_results()
        if self.transactions is not None:
            self._commit_transaction(force=False)
            return
        self.offsets.collect_acknowledged()
        now = time.monotonic()
        if self._stalled(now):
            self.wait_oldest()  # answered meanwhile, or raises: the session restarts
            return
        if now >= self._next_commit and (taken := self.offsets.take_acknowledged()):
            offsets, since = taken
            self.offsets.commit_sent(self._commit(offsets, sync=False), offsets, since)
            self._next_commit = now + self.settings.kafka.commit_interval_ms / 1000.0
        self.health.uncommitted_since = self.offsets.uncommitted_since()

    def _stalled(self, now: float) -> bool:
        """The oldest batch still has sends without an answer, a request timeout after it
        was processed. A client should have answered or failed them by then; librdkafka's
        idempotent producer, after a broker hang, was seen holding them unanswered for
        over 90 s (its message.timeout.ms is 5 min), the loop committing nothing
        meanwhile. One more request timeout, then a new session with a new producer."""
        if not self.offsets.pending:
            return False
        age_s = now - self.offsets.pending[0].processed_at
        if age_s <= self.settings.kafka.request_timeout_ms / 1000.0:
            return False
        log.warning(
            "sends of a batch processed %.0f s ago are still unanswered (kafka."
            "request_timeout_ms); waiting one more timeout before a new session",
            age_s,
        )
        return True

    def take_results(self) -> None:
        """Async commits the broker answered: a failed one goes back into the next commit."""
        assert self.fetcher is not None
        for ticket, error in self.fetcher.commit_results():
            if self.offsets.commit_answered(ticket, error):
                # Not again every commit interval while the coordinator is away.
                self._next_commit = max(self._next_commit, time.monotonic() + COMMIT_RETRY_S)

    def retry_now(self) -> None:
        """The next ``ready`` may commit at once (tests: the retry pause is not theirs)."""
        self._next_commit = 0.0

    def wait_oldest(self) -> None:
        """Block on the oldest batch's acknowledgements (bounding what is in flight)."""
        head = self.offsets.pending[0]
        with self._stage("wait_acks"):
            for f in head.futures:
                f.get(timeout=self.settings.kafka.request_timeout_ms / 1000.0)  # raises if failed
        self.ready()

    def drain(self) -> None:
        """Wait for every send in flight, then commit all processed offsets synchronously."""
        if self.producer is None or self.fetcher is None:
            return
        if self.transactions is not None:
            self._commit_transaction(force=True)
            return
        with self._stage("drain"):
            self.producer.flush(timeout=self.settings.service.shutdown_grace_s)
            self.serve()
            self.take_results()
            everything = self.offsets.take_everything()
            if everything:
                self._commit(everything, sync=True)
                self.offsets.commit_sent(None, everything, time.monotonic())
            self.health.uncommitted_since = self.offsets.uncommitted_since()

    def forget(self) -> None:
        """Partitions lost: nothing processed may be committed any more."""
        self.offsets.clear()
        self.health.uncommitted_since = None

    def _commit(self, offsets: dict[TopicPartition, int], sync: bool) -> int:
        assert self.fetcher is not None
        with self._stage("commit"):
            ticket = self.fetcher.commit(offsets, sync)
        self.metrics.commits.inc()
        self.metrics.last_commit.set_to_current_time()
        return ticket

    def _commit_transaction(self, force: bool) -> None:
        """exactly_once: every processed batch's sends and offsets, one transaction.

        ``detector.stream.delivery`` says what it holds and how zombies are fenced.
        """
        assert self.transactions is not None and self.fetcher is not None
        if not self.offsets.pending or not (force or self.transactions.due()):
            self.health.uncommitted_since = self.offsets.uncommitted_since()
            return
        try:
            with self._stage("commit"):
                self.transactions.commit(self.offsets.pending, self.fetcher.group_metadata())
        except BaseException:
            self._on_abort()
            raise
        self.metrics.commits.inc()
        self.metrics.last_commit.set_to_current_time()
        # /readyz's commit age: the transaction took them
        self.health.uncommitted_since = self.offsets.uncommitted_since()
