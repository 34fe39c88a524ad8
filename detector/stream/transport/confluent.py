"""The confluent-kafka transport (``kafka.client = "confluent"``): librdkafka underneath.

librdkafka fetches and decodes records on its own threads, in C: a poll hands over whole
batches at once, so there is no fetch process. Its callbacks (rebalances, delivery
reports, commit results, statistics) run only inside ``consume``, ``poll`` and
``flush``, on the thread that calls them: the loop's. A revocation therefore reaches the
service's handler inside ``Fetcher.poll``, as with kafka-python, and the handler's sync
commit is allowed there (librdkafka lets a rebalance callback commit); the loop calls
``serve()`` once a turn so that acknowledgements arrive while the topic is idle.

The contracts are those of the kafka-python transport: offsets are committed only when
the service hands them over (no auto-commit, no offset store), the eager ``range``
assignor makes a revocation commit everything processed before the partitions move, and
the producer is idempotent with ``acks=all`` by default. How each setting maps to its
librdkafka property: ``detector.stream.transport.confluent_config``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from kafka import TopicPartition
from kafka.structs import ConsumerGroupMetadata

from detector.settings import KafkaSettings
from detector.stream.fetcher import (
    CommitResult,
    FetcherError,
    FetchStatus,
    RebalanceHandler,
)
from detector.stream.transport.confluent_batch import MessageBatch
from detector.stream.transport.confluent_config import (
    MAX_MESSAGE_BYTES,
    consumer_config,
    producer_config,
)

log = logging.getLogger(__name__)
# librdkafka's own log lines, filtered like kafka-python's (detector.logs).
LIBRDKAFKA_LOGGER = "librdkafka"

# A full local queue (produce raises BufferError): serve delivery reports this long, retry.
QUEUE_FULL_WAIT_S = 0.05


class ConfluentError(FetcherError):
    """confluent-kafka raised: the Kafka session must be restarted."""


def _ours(tp: ConfluentPartition) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


class DeliveryFuture:
    """One send's acknowledgement, with the face of kafka-python's ``FutureRecordMetadata``
    that the service reads (``is_done``, ``failed()``, ``exception``, ``get``)."""

    __slots__ = ("_producer", "exception", "is_done")

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self.is_done = False
        self.exception: BaseException | None = None

    def __call__(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.exception = ConfluentError(f"send failed: {err.str()} ({err.name()})")
        self.is_done = True

    def failed(self) -> bool:
        return self.exception is not None

    def get(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_done:
            if deadline is not None and time.monotonic() >= deadline:
                raise ConfluentError(f"a send was not acknowledged within {timeout:.0f} s")
            self._producer.poll(0.05)
        if self.exception is not None:
            raise self.exception


class ConfluentProducer:
    """Sends alerts, dead letters, samples: what the service asks of a producer."""

    def __init__(self, cfg: KafkaSettings) -> None:
        self._producer = Producer(producer_config(cfg), logger=logging.getLogger(LIBRDKAFKA_LOGGER))
        # Read by the pipeline to cut dead letters to fit, as kafka-python's config is.
        self.config: Mapping[str, Any] = {"max_request_size": MAX_MESSAGE_BYTES}

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> DeliveryFuture:
        future = DeliveryFuture(self._producer)
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=future)
                return future
            except BufferError:  # the local queue is full: let acknowledgements drain it
                self._producer.poll(QUEUE_FULL_WAIT_S)
            except KafkaException as exc:
                raise ConfluentError(f"send to {topic} refused: {exc}") from exc

    def serve(self) -> None:
        """Deliver the acknowledgements that arrived (their callbacks run here)."""
        self._producer.poll(0)

    def flush(self, timeout: float | None = None) -> None:
        left = self._producer.flush(-1 if timeout is None else timeout)
        if left:
            log.warning("%d sends still unacknowledged after the flush", left)

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)


class ConfluentFetcher:
    """The input consumer: polls batches, commits what the service hands over."""

    def __init__(self, cfg: KafkaSettings, handler: RebalanceHandler) -> None:
        self.cfg = cfg
        self.handler = handler
        self._tickets = 0
        # Async commits awaiting their on_commit callback, by the offsets they carry.
        self._awaiting: dict[frozenset[tuple[str, int, int]], deque[int]] = {}
        self._results: list[CommitResult] = []
        self._commit_failing = False
        self._group_state = "init"  # librdkafka's cgrp.state, from its statistics
        self._brokers_up = 0
        self._brokers_known = 0
        self._topic_missing = False
        # librdkafka reads a subscription starting with "^" as a pattern of topics.
        self._topic = None if cfg.input_topic.startswith("^") else cfg.input_topic
        conf = consumer_config(cfg)
        conf.update(
            on_commit=self._on_commit,
            stats_cb=self._on_stats,
            error_cb=self._on_error,
        )
        try:
            self.consumer = Consumer(conf, logger=logging.getLogger(LIBRDKAFKA_LOGGER))
            self._await_topic(cfg.input_topic, cfg.bootstrap_timeout_ms / 1000.0)
            self.consumer.subscribe(
                [cfg.input_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        except KafkaException as exc:
            raise ConfluentError(f"cannot start the consumer: {exc}") from exc

    def _await_topic(self, topic: str, timeout_s: float) -> None:
        """Have the input topic on the cluster before joining, as the kafka-python fetcher
        does: a metadata request for the topic itself creates it where the broker allows
        (librdkafka's subscription alone does not, even with allow.auto.create.topics:
        measured on Apache Kafka 4.4, no assignment in 40 s), and the group's first
        assignment then covers its partitions."""
        deadline = time.monotonic() + timeout_s
        while True:
            left_s = deadline - time.monotonic()
            try:
                found = self.consumer.list_topics(topic=topic, timeout=max(0.1, min(left_s, 2.0)))
                meta = found.topics.get(topic)
                if meta is not None and meta.error is None and meta.partitions:
                    return
            except KafkaException:
                pass  # not reachable yet: the session's own checks report that
            if left_s <= 0:
                break
            time.sleep(0.2)
        self._topic_missing = True
        log.warning("input topic %s not found on the cluster yet; joining the group anyway", topic)

    # -- the loop's calls --------------------------------------------------------------
    def poll(self, timeout_ms: int) -> MessageBatch | None:
        started = time.perf_counter()
        try:
            messages = self.consumer.consume(self.cfg.max_poll_records, timeout_ms / 1000.0)
        except KafkaException as exc:
            raise ConfluentError(f"poll failed: {exc}") from exc
        if not messages:
            return None
        if any([m.error() is not None for m in messages]):
            # Rare (end of partition is off; broker or topic errors): report each one and
            # keep the records around them.
            for m in messages:
                err = m.error()
                if err is not None:
                    self._message_error(err)
            messages = [m for m in messages if m.error() is None]
            if not messages:
                return None
        # Values and next offsets now, the other columns if asked (confluent_batch).
        return MessageBatch(messages, self._topic, time.perf_counter() - started)

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> int:
        self._tickets += 1
        ticket = self._tickets
        theirs = [ConfluentPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()]
        if sync:
            try:
                done = self.consumer.commit(offsets=theirs, asynchronous=False)
            except KafkaException as exc:
                raise ConfluentError(f"offset commit failed: {exc}") from exc
            failed = [p for p in done or [] if p.error is not None]
            if failed:
                raise ConfluentError(f"offset commit failed: {failed[0].error}")
            return ticket
        key = frozenset((tp.topic, tp.partition, o) for tp, o in offsets.items())
        self._awaiting.setdefault(key, deque()).append(ticket)
        try:
            self.consumer.commit(offsets=theirs, asynchronous=True)
        except KafkaException as exc:
            self._awaiting[key].pop()
            self._results.append((ticket, f"KafkaException: {exc}"))
        return ticket

    def commit_results(self) -> list[CommitResult]:
        out, self._results = self._results, []
        return out

    def status(self) -> FetchStatus:
        return FetchStatus(self.lag(), self.broker_problem(), {})

    def broker_problem(self) -> str | None:
        if self._brokers_known and not self._brokers_up:
            return "no broker connection up"
        if self._group_state != "up":
            return f"group coordinator not reached (librdkafka: {self._group_state})"
        return None

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: high watermark - position, from cached fetch responses."""
        out: dict[TopicPartition, int] = {}
        try:
            positions = self.consumer.position(self.consumer.assignment())
        except KafkaException:
            return out
        for tp in positions:
            if tp.offset < 0:
                continue  # no position yet
            try:
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                out[_ours(tp)] = max(0, high - tp.offset)
        return out

    def group_metadata(self) -> ConsumerGroupMetadata:
        raise ConfluentError("exactly_once needs kafka.client = 'kafka-python'")

    def close(self) -> None:
        # Leaves the group (no commit: enable.auto.commit is off): partitions move at once.
        self.consumer.close()

    # -- librdkafka's callbacks (inside consume, on the loop's thread) -----------------
    def _on_assign(self, _consumer: Consumer, partitions: list[ConfluentPartition]) -> None:
        self.handler.on_assigned(sorted(_ours(p) for p in partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[ConfluentPartition]) -> None:
        self.handler.on_revoked(sorted(_ours(p) for p in partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[ConfluentPartition]) -> None:
        self.handler.on_lost(sorted(_ours(p) for p in partitions))

    def _on_commit(self, err: KafkaError | None, partitions: list[ConfluentPartition]) -> None:
        key = frozenset((p.topic, p.partition, p.offset) for p in partitions)
        tickets = self._awaiting.get(key)
        if not tickets:
            return  # a sync commit's report (its caller has the outcome already)
        ticket = tickets.popleft()
        if not tickets:
            del self._awaiting[key]
        failure = err if err is not None else next((p.error for p in partitions if p.error), None)
        if failure is None:
            if self._commit_failing:
                log.info("offset commits succeed again")
            self._commit_failing = False
            self._results.append((ticket, None))
            return
        # Reported, not retried here: the service merges the offsets into its next commit.
        level = logging.DEBUG if self._commit_failing else logging.WARNING
        log.log(level, "offset commit failed: %s (retried with the next)", failure)
        self._commit_failing = True
        self._results.append((ticket, f"KafkaError: {failure}"))

    def _on_stats(self, stats_json: str) -> None:
        stats = orjson.loads(stats_json)
        self._group_state = str(stats.get("cgrp", {}).get("state", "none"))
        brokers = [b for b in stats.get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        self._brokers_known = len(brokers)
        self._brokers_up = sum(1 for b in brokers if b.get("state") == "UP")

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("Kafka client error: %s", err.str())
        elif err.code() != KafkaError._ALL_BROKERS_DOWN:
            log.debug("Kafka client error: %s", err.str())
        else:
            self._brokers_up = 0

    def _message_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            # The input topic does not exist yet: librdkafka joins once it appears.
            if not self._topic_missing:
                log.warning("input topic %s not found on the cluster yet", self.cfg.input_topic)
            self._topic_missing = True
            return
        if err.fatal() or (not err.retriable() and err.code() > 0):
            raise ConfluentError(f"consumer error: {err.str()} ({err.name()})")
        log.debug("consumer error (retried by the client): %s", err.str())
