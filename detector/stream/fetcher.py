"""Fetching: the consumer's side of the loop, in this process or in a child process.

kafka-python decodes records in pure Python, about 5 us per event: as much as parsing,
scoring and publishing together. With ``service.fetch_process`` on (the default) a child
process owns the consumer and fetches batch i+1 while the service scores batch i, so the
two halves use two cores instead of taking turns on one::

    fetch process (ConsumerFetcher)            service process (DetectorService)
    poll -> RecordBatch  ---- batches ---->    parse, score, publish, observe
    commit_async(offsets) <--- commit -----    every send of the batch acknowledged
    revoked: wait        ---- revoked ---->    drain sends, commit ---- resume ---->

At-least-once is the same in both modes: the child never commits on its own, only the
offsets the service hands it after their alerts and dead letters are acknowledged. If
the service process dies, the child sees its pipe close and exits without committing;
if the child dies, the service ends the Kafka session and starts a new one.

This module holds what both modes share and the consumer itself; the child process and
its pipes are in ``detector.stream.fetch_process``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CorruptRecordError, KafkaError, UnsupportedCodecError
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata

from detector.errors import DetectorError
from detector.records import Records
from detector.settings import KafkaSettings
from detector.stream.clients import make_consumer
from detector.stream.delivery import consumer_overrides

log = logging.getLogger(__name__)

# A partition whose records cannot be decoded is paused this long between attempts: a
# retry per poll would spin on the same bytes, and a restart of the fetch process would
# only meet them again.
UNDECODABLE_RETRY_S = 30.0
# While the service drains and commits during a revocation, the rebalance listener looks
# at the pipe this often; in between, kafka-python's IO loop keeps heartbeating.
REVOKE_POLL_S = 0.005


class FetcherError(DetectorError):
    """The fetch process failed or went away; the Kafka session must be restarted."""


@dataclass(slots=True)
class RecordBatch:
    """One poll's records as flat columns (cheap to pickle), in poll order.

    ``next_offsets`` holds, per partition, the offset to commit once the whole batch is
    handled: the last record's offset + 1.
    """

    topics: list[str]
    partitions: list[int]
    offsets: list[int]
    timestamps_ms: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    next_offsets: dict[TopicPartition, int]
    fetch_seconds: float = 0.0  # time the poll took where the consumer runs

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def from_poll(
        cls, polled: dict[TopicPartition, list[Any]], fetch_seconds: float = 0.0
    ) -> RecordBatch | None:
        if not polled:
            return None
        batch = cls([], [], [], [], [], [], {}, fetch_seconds)
        for tp, records in polled.items():
            if not records:
                continue
            batch.topics += [tp.topic] * len(records)
            batch.partitions += [tp.partition] * len(records)
            batch.offsets += [r.offset for r in records]
            batch.timestamps_ms += [r.timestamp for r in records]
            batch.keys += [r.key for r in records]
            batch.values += [r.value for r in records]
            batch.next_offsets[tp] = records[-1].offset + 1  # records arrive in offset order
        return batch if batch.values else None


@dataclass(slots=True)
class FetchStatus:
    """What the consumer knows about its side, for /readyz and the lag gauge.

    ``broker_problem`` is None while the group coordinator is known and answered within
    the session timeout; ``held`` names the partitions paused on undecodable records.
    """

    lag: dict[TopicPartition, int] = field(default_factory=dict)
    broker_problem: str | None = "not connected yet"
    held: dict[TopicPartition, str] = field(default_factory=dict)


# The outcome of one asynchronous commit: its ticket (from ``Fetcher.commit``) and None
# when the broker confirmed it, else the error text.
CommitResult = tuple[int, str | None]


class RebalanceHandler(Protocol):
    """What the service does when partitions move (see ``DetectorService``)."""

    def on_revoked(self, partitions: list[TopicPartition]) -> None: ...

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        """The group dropped this member (session expired, broker replaced): the
        partitions are no longer ours, so nothing may be committed for them."""
        ...

    def on_assigned(self, partitions: list[TopicPartition]) -> None: ...


class PolledBatch(Records, Protocol):
    """What a fetcher's poll returns: the records, and what to commit once they are done."""

    next_offsets: dict[TopicPartition, int]
    fetch_seconds: float


class Fetcher(Protocol):
    def poll(self, timeout_ms: int) -> PolledBatch | None: ...

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> int:
        """Commit ``offsets``; sync raises on failure, async returns a ticket whose
        outcome ``commit_results()`` reports later."""
        ...

    def commit_results(self) -> list[CommitResult]: ...

    def status(self) -> FetchStatus: ...

    def group_metadata(self) -> ConsumerGroupMetadata:
        """The consumer's group membership, for offsets sent in a transaction (KIP-447)."""
        ...

    def close(self) -> None: ...


# -- in this process ----------------------------------------------------------------------
class _Listener(AsyncConsumerRebalanceListener):
    """kafka-python 3 calls rebalance listeners on its IO thread, where a blocking call
    (``consumer.commit()``) fails with "Cannot block on net.run() from the IO thread".
    So the listener is async: a sync commit asked for during a revocation is awaited here,
    and a handler with ``hand_over_async`` (the fetch process) awaits its own work while
    the IO loop keeps heartbeating."""

    def __init__(self, fetcher: ConsumerFetcher, handler: RebalanceHandler) -> None:
        self.fetcher = fetcher
        self.handler = handler

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = sorted(revoked)
        hook: Callable[[str, list[TopicPartition]], Awaitable[None]] | None = getattr(
            self.handler, "hand_over_async", None
        )
        if hook is not None:
            await hook("revoked", partitions)
            return
        self.fetcher._deferred = {}
        try:
            self.handler.on_revoked(partitions)  # its sync commit lands in _deferred
        finally:
            deferred, self.fetcher._deferred = self.fetcher._deferred, None
        if deferred:
            await self.fetcher.commit_in_listener(deferred)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.fetcher.held.clear()  # pauses do not survive a rebalance
        self.handler.on_assigned(sorted(assigned))

    async def on_partitions_lost(self, lost: Any) -> None:
        # Evicted (session expired, broker replaced): committing would be refused with
        # CommitFailedError, so the handler drops its uncommitted work instead, and the
        # consumer rejoins in the same session. Ending the session here instead left
        # Tansu's group waiting on a leader that had left mid-sync.
        partitions = sorted(lost)
        hook: Callable[[str, list[TopicPartition]], Awaitable[None]] | None = getattr(
            self.handler, "hand_over_async", None
        )
        if hook is not None:
            await hook("lost", partitions)
            return
        self.handler.on_lost(partitions)


def _await_topic_metadata(consumer: KafkaConsumer, topic: str, timeout_s: float) -> None:
    """Have the input topic's partitions in this consumer's metadata before it joins.

    A group leader assigns from its own metadata: a topic created moments before (a new
    deployment, every test) may not be there yet, and kafka-python then hands out an empty
    assignment that no later metadata update corrects (seen on Apache Kafka: the group sat
    on zero partitions for minutes). Asking for the topic's partitions fetches it.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if consumer.partitions_for_topic(topic):
            return
        time.sleep(0.2)
    log.warning("input topic %s not found on the cluster yet; joining the group anyway", topic)


class ConsumerFetcher:
    """The Kafka consumer itself: used in-process, and by the fetch process."""

    def __init__(self, cfg: KafkaSettings, handler: RebalanceHandler) -> None:
        self.cfg = cfg
        self.consumer: KafkaConsumer = make_consumer(cfg, **consumer_overrides(cfg))
        self.held: dict[TopicPartition, str] = {}  # paused on undecodable records: why
        self._held_until: dict[TopicPartition, float] = {}
        self._deferred: dict[TopicPartition, int] | None = None  # sync commit inside a revocation
        self._tickets = 0
        self._results: deque[CommitResult] = deque()  # appended on kafka-python's IO thread
        self._commit_failing = False
        try:
            _await_topic_metadata(self.consumer, cfg.input_topic, cfg.bootstrap_timeout_ms / 1000.0)
            self.consumer.subscribe([cfg.input_topic], listener=_Listener(self, handler))
        except Exception:
            self.consumer.close(autocommit=False)
            raise

    def poll(self, timeout_ms: int) -> RecordBatch | None:
        self._resume_held()
        started = time.perf_counter()
        try:
            polled = self.consumer.poll(
                timeout_ms=timeout_ms, max_records=self.cfg.max_poll_records
            )
        except (UnsupportedCodecError, CorruptRecordError) as exc:
            self._hold_undecodable(exc)
            return None
        except KafkaError:
            raise  # the session's business: broker, group, authorization
        except Exception as exc:  # a codec library's own error (lz4, zstd, snappy)
            if not self._hold_undecodable(exc):
                raise
            return None
        if self.held:
            for tp in polled:
                if self.held.pop(tp, None) is not None:
                    log.info(
                        "%s-%d: records decode again; partition resumed", tp.topic, tp.partition
                    )
        return RecordBatch.from_poll(polled, time.perf_counter() - started)

    def _hold_undecodable(self, exc: Exception) -> bool:
        """Pause the partition whose records failed to decode; False if none is known.

        The records are neither skipped nor dead-lettered: their bytes cannot be read, so
        there is nothing to publish, and skipping would lose them silently. The partition
        stays at that offset (retried every ``UNDECODABLE_RETRY_S``; /readyz says which)
        while the others keep flowing, and the fetch process is not restarted for it.
        """
        # kafka-python keeps the failing partition's records as the next in line; this is
        # the only place that names the partition of an UnsupportedCodecError.
        part = getattr(getattr(self.consumer, "_fetcher", None), "_next_partition_records", None)
        tp = getattr(part, "topic_partition", None)
        if not isinstance(tp, TopicPartition):
            return False
        offset = getattr(part, "fetch_offset", None)
        why = f"records from offset {offset} cannot be decoded: {type(exc).__name__}: {exc}"
        if tp not in self.held:
            log.error(
                "%s-%d: %s; partition paused, retried every %.0f s (install the codec "
                "library if one is missing)",
                tp.topic,
                tp.partition,
                why,
                UNDECODABLE_RETRY_S,
            )
        self.held[tp] = why
        self._held_until[tp] = time.monotonic() + UNDECODABLE_RETRY_S
        with contextlib.suppress(Exception):
            self.consumer._fetcher._next_partition_records = None  # drop the broken iterator
        with contextlib.suppress(KafkaError, AssertionError):
            self.consumer.pause(tp)
        return True

    def _resume_held(self) -> None:
        if not self._held_until:
            return
        now = time.monotonic()
        due = [tp for tp, until in self._held_until.items() if until <= now]
        for tp in due:
            del self._held_until[tp]  # stays in ``held`` until records of it decode again
            with contextlib.suppress(KafkaError, AssertionError):
                self.consumer.resume(tp)

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> int:
        meta = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        self._tickets += 1
        ticket = self._tickets
        if sync and self._deferred is not None:
            # Inside a revocation, on the IO thread: the listener awaits it when the
            # handler returns, before the partitions move.
            self._deferred.update(offsets)
        elif sync:
            self.consumer.commit(meta)
        else:
            self.consumer.commit_async(meta, callback=self._on_commit(ticket))
        return ticket

    def _on_commit(self, ticket: int) -> Callable[[Any, Any], None]:
        def done(offsets: Any, response: Any) -> None:
            if isinstance(response, Exception):
                # Reported, not retried here: the service merges the offsets back into
                # its next commit (a lost commit alone would only mean redelivery).
                # One warning per run of failures: the retries say the same.
                level = logging.DEBUG if self._commit_failing else logging.WARNING
                log.log(level, "offset commit failed: %s (retried with the next)", response)
                self._commit_failing = True
                self._results.append((ticket, f"{type(response).__name__}: {response}"))
            else:
                if self._commit_failing:
                    log.info("offset commits succeed again")
                self._commit_failing = False
                self._results.append((ticket, None))

        return done

    def commit_results(self) -> list[CommitResult]:
        out: list[CommitResult] = []
        while self._results:
            out.append(self._results.popleft())
        return out

    async def commit_in_listener(self, offsets: dict[TopicPartition, int]) -> None:
        """A synchronous commit from inside a rebalance listener (on the IO thread)."""
        meta = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        coordinator = self.consumer._coordinator
        await coordinator._commit_offsets_sync_async(meta, self.cfg.request_timeout_ms)

    async def sleep(self, seconds: float) -> None:
        """Yield kafka-python's IO loop (heartbeats, fetches) from inside a listener."""
        await self.consumer._net.sleep(seconds)

    def status(self) -> FetchStatus:
        return FetchStatus(self.lag(), self.broker_problem(), dict(self.held))

    def broker_problem(self) -> str | None:
        """None while the group coordinator is known and has answered within the session
        timeout; else what is wrong. Reads kafka-python's state, sends nothing."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is None:
            return None
        if coordinator.coordinator_id is None:
            return "no group coordinator reachable"
        heartbeat = coordinator.heartbeat
        if coordinator.stable() and heartbeat.session_timeout_expired():
            age_s = time.monotonic() - max(heartbeat.last_receive, heartbeat.last_reset)
            return f"no heartbeat answer from the group coordinator for {age_s:.0f} s"
        return None

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: high watermark - position, from cached fetch responses.

        ``end_offsets()`` would be a round trip per call (and is unreliable on Tansu).
        """
        out: dict[TopicPartition, int] = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=0)
            except (KafkaError, TypeError):
                continue
            if position is not None:
                out[tp] = max(0, high - position)
        return out

    def group_metadata(self) -> ConsumerGroupMetadata:
        return self.consumer.group_metadata()

    def close(self) -> None:
        # Leaves the group: the partitions move to another replica at once.
        self.consumer.close(autocommit=False)
