"""The detector service: the consumer loop of DESIGN.md, one named call per stage.

    poll -> parse -> score -> publish alerts and dead letters -> commit (once acknowledged)
         -> observe (drift window) -> reload the model if CURRENT changed

``poll`` and ``commit`` go through a fetcher (``detector.stream.fetcher``): by default the
Kafka consumer runs in a child process that fetches the next batch while this one is
scored; the loop is the same either way.

At-least-once: a batch's offsets are committed only after every alert and dead letter
it produced is acknowledged by the broker. Sends are asynchronous and commits trail them
in batch order, so the loop never blocks on a round trip while the promise still holds:
offsets move past a batch only when all of its sends (and all earlier batches') are done.
A failed send ends the session without committing; the next session resumes from the
last committed offsets, so the batch is processed again.

With ``kafka.delivery = "exactly_once"`` the commit step is a Kafka transaction instead:
the batches' alerts, dead letters and offsets commit together (``detector.stream.delivery``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from threadpoolctl import threadpool_limits

from detector.drift.monitor import DriftMonitor, DriftObserver, Sampler
from detector.errors import DetectorError, ModelIntegrityError, RegistryError
from detector.events import EventParser
from detector.features.temporal import TemporalState
from detector.health import HealthState
from detector.metrics import ServiceMetrics
from detector.model.scorer import Scorer, ScoreResult
from detector.registry.store import ModelRegistry
from detector.settings import Settings
from detector.stream.alerts import Cooldown, Source, build_alert, dead_letter_headers
from detector.stream.clients import make_producer
from detector.stream.delivery import Transactions, exactly_once
from detector.stream.fetcher import Fetcher, FetcherError, RecordBatch, open_fetcher
from detector.stream.memory import (
    HeapTrimmer,
    fill_numpy_buffer_cache,
    freeze_startup_objects,
    pin_malloc_mmap_threshold,
)

log = logging.getLogger(__name__)

# Batches whose sends may be in flight before the loop waits for the oldest: bounds
# memory and the redelivery after a crash, while one slow ack never stalls the loop.
MAX_PENDING_BATCHES = 16
# Lag is read from the fetcher's cached high watermarks; once a second is plenty.
LAG_INTERVAL_S = 1.0
# Back-off between Kafka sessions after an error: 0.5 s doubling up to 30 s.
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


class DeliveryError(DetectorError):
    """An alert or dead letter was not acknowledged; its batch must not be committed."""


@dataclass
class Pending:
    """A processed batch whose offsets wait for its sends to be acknowledged."""

    offsets: dict[TopicPartition, int]
    futures: list[Any]

    def done(self) -> bool:
        return all(f.is_done for f in self.futures)

    def raise_if_failed(self) -> None:
        for f in self.futures:
            if f.failed():
                raise DeliveryError(f"a send of the batch was not acknowledged: {f.exception!r}")


@dataclass
class ScoredBatch:
    """What one batch became; handed to observers (drift window, demo, benchmarks)."""

    batch: RecordBatch
    scored_index: list[int]  # positions in ``batch`` of rows that were scored
    entities: list[str | None]
    event_times_ms: list[int]
    values: list[dict[str, Any]]
    result: ScoreResult
    model_version: str
    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[tuple[int, str, str]] = field(
        default_factory=list
    )  # (record pos, reason, msg)


BatchObserver = Callable[[ScoredBatch, KafkaProducer], list[Any]]


class DetectorService:
    """Scores an input topic continuously. ``run()`` blocks; ``stop()`` ends it cleanly."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: ModelRegistry | None = None,
        metrics: ServiceMetrics | None = None,
        observers: list[BatchObserver] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or ModelRegistry(settings.registry)
        self.metrics = metrics or ServiceMetrics()
        self.health = HealthState(settings.service.heartbeat_stale_s)
        self.parser = EventParser(settings.event)
        self.cooldown = Cooldown(settings.service.alert_cooldown_s)
        # The drift window: samples for the retraining job, drift tests over recent events.
        self.drift = DriftMonitor(settings.drift, settings.kafka, self.metrics)
        self.observers: list[BatchObserver] = [
            Sampler(settings.drift, settings.kafka, self.metrics, seed=settings.model.random_seed),
            DriftObserver(self.drift, lambda: self.scorer),
            *(observers or []),
        ]
        self.scorer: Scorer | None = None
        self.temporal: TemporalState | None = None  # per-entity history, when the model uses it
        self.stage_seconds: dict[str, float] = {}
        self._stop = threading.Event()
        self._refused: set[str] = set()
        self._next_reload = 0.0
        self._next_lag = 0.0
        self._trim_heap = HeapTrimmer()
        self._pending: deque[Pending] = deque()
        self._acked: dict[TopicPartition, int] = {}  # acknowledged, not yet committed
        self._next_commit = 0.0
        self._fetcher: Fetcher | None = None
        self._producer: KafkaProducer | None = None
        self._transactions: Transactions | None = None  # kafka.delivery = "exactly_once"
        self.consumed = 0
        self._idle_since = time.monotonic()  # the last record or assignment, for idle_timeout_s
        self._joining = True  # between a revocation (or the start) and the next assignment

    # -- lifecycle ---------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, flush, commit and leave the group."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, max_events: int | None = None, idle_timeout_s: float | None = None) -> None:
        """Serve until ``stop()``, or ``max_events`` consumed, or ``idle_timeout_s`` without records.

        The idle clock stops during a group join and restarts at the assignment.

        Kafka errors end the session and start a new one after a back-off (not ready
        meanwhile); nothing is committed that was not acknowledged.
        """
        # RSS stays flat under load only if big buffers stay on mmap and numpy's buffer cache
        # is full from the start; full collections stall batches only if they need not walk
        # the imported modules (detector.stream.memory has the measurements).
        pin_malloc_mmap_threshold()
        fill_numpy_buffer_cache()
        freeze_startup_objects()
        # One BLAS thread: batches are ~1000 x d, too small to gain from threads, and idle
        # OpenBLAS workers spin on the cores the Kafka client (and often the broker) needs.
        with threadpool_limits(limits=1):
            self._serve(max_events, idle_timeout_s)

    def _serve(self, max_events: int | None, idle_timeout_s: float | None) -> None:
        backoff = BACKOFF_START_S
        while not self.stopping:
            if self.scorer is None and not self._load_initial_model():
                self._stop.wait(max(1.0, self.settings.service.reload_interval_s))
                continue
            try:
                finished = self._session(max_events, idle_timeout_s)
                backoff = BACKOFF_START_S
                if finished:
                    return
            except (KafkaError, DeliveryError, FetcherError, OSError) as exc:
                self.metrics.broker_errors.inc()
                self.health.connected = False
                self.health.reason = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "Kafka session ended (%s); retrying in %.1f s", self.health.reason, backoff
                )
                self._stop.wait(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)

    def _load_initial_model(self) -> bool:
        try:
            self._load_model(None)
            return True
        except (RegistryError, ModelIntegrityError) as exc:
            self.health.reason = str(exc)
            log.error("no usable model yet: %s", exc)
            return False

    def _session(self, max_events: int | None, idle_timeout_s: float | None) -> bool:
        cfg = self.settings.kafka
        self._pending.clear()
        self._acked = {}
        try:
            if exactly_once(cfg):
                self._transactions = Transactions(cfg)
                self._producer = self._transactions.producer
            else:
                self._producer = make_producer(cfg)
            self._fetcher = open_fetcher(self.settings, self)
            self.health.connected = True
            self.health.reason = "connected"
            log.info(
                "consuming %s as group %s from %s",
                cfg.input_topic,
                cfg.group_id,
                cfg.bootstrap_servers,
            )
            self._idle_since = time.monotonic()
            self._joining = True
            while not self.stopping:
                batch = self._poll()
                self.health.beat()
                if batch:
                    self._idle_since = time.monotonic()
                    self._process(batch)
                self._commit_ready()
                self._evaluate_drift()
                self._maybe_reload()
                self._update_lag()
                self._trim_heap()
                if max_events is not None and self.consumed >= max_events:
                    break
                # A group join is not idleness (after a crash it can take a session timeout).
                idle_s = time.monotonic() - self._idle_since
                if idle_timeout_s is not None and not self._joining and idle_s > idle_timeout_s:
                    break
            self._drain_and_commit()
            return True
        finally:
            self._close()

    def _close(self) -> None:
        fetcher, producer = self._fetcher, self._producer
        self._fetcher, self._producer = None, None
        if self._transactions is not None:
            self._transactions.close(self.settings.service.shutdown_grace_s)
            self._transactions = None
        self.health.connected = False
        self.health.partitions = 0
        if producer is not None:
            try:
                producer.close(timeout=self.settings.service.shutdown_grace_s)
            except Exception:  # closing after a broker failure must not mask that failure
                log.debug("producer close failed", exc_info=True)
        if fetcher is not None:
            try:
                fetcher.close()  # leaves the group: partitions move at once
            except Exception:
                log.debug("fetcher close failed", exc_info=True)

    # -- the stages --------------------------------------------------------------------
    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        took = time.perf_counter() - start
        self.metrics.stage_seconds.labels(name).observe(took)
        self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + took

    def _poll(self) -> RecordBatch | None:
        assert self._fetcher is not None
        with self._stage("poll"):
            return self._fetcher.poll(self.settings.service.poll_timeout_ms)

    def _process(self, batch: RecordBatch) -> None:
        assert self.scorer is not None and self._producer is not None
        n = len(batch)
        self.consumed += n
        self.metrics.consumed.inc(n)
        self.metrics.batch_size.observe(n)
        with self._stage("parse"):
            scored_batch = self._parse(batch)
        if self.temporal is not None:
            with self._stage("temporal"):
                before = self.temporal.warmup_rows
                scored_batch.values = self.temporal.augment(
                    scored_batch.entities, scored_batch.values
                )
                self.metrics.temporal_warmup.inc(self.temporal.warmup_rows - before)
        with self._stage("score"):
            scored_batch.result = self.scorer.score(scored_batch.values)
        with self._stage("publish"):
            futures = self._publish(scored_batch)
        with self._stage("observe"):
            for observer in self.observers:
                try:
                    futures.extend(observer(scored_batch, self._advisory_producer))
                except Exception:
                    # Drift and sampling are advisory: a failure there must not stop scoring.
                    self.metrics.observer_errors.inc()
                    log.exception("batch observer %r failed; scoring continues", observer)
        self._pending.append(Pending(batch.next_offsets, futures))
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "batch of %d: %d scored, %d alerts, %d dead letters, %d sends in flight",
                n,
                n - len(scored_batch.dead_letters),
                len(scored_batch.alerts),
                len(scored_batch.dead_letters),
                sum(len(p.futures) for p in self._pending),
            )
        if len(self._pending) > MAX_PENDING_BATCHES:
            self._wait_oldest()

    def _parse(self, batch: RecordBatch) -> ScoredBatch:
        parsed = self.parser.parse_batch(batch.values)
        times: list[int] = parsed.event_times_ms  # type: ignore[assignment]
        if None in times:  # events without a time take the record's timestamp
            times = [
                t if t is not None else ts
                for t, ts in zip(parsed.event_times_ms, batch.timestamps_ms, strict=True)
            ]
        assert self.scorer is not None
        if not parsed.errors:  # the common case: every record is an event
            index = list(range(len(batch)))
            return ScoredBatch(
                batch, index, parsed.entities, times, parsed.values, _EMPTY, self.scorer.version
            )
        index = [i for i in range(len(batch)) if i not in parsed.errors]
        dead = [(pos, reason, message) for pos, (reason, message) in parsed.errors.items()]
        return ScoredBatch(
            batch,
            index,
            [parsed.entities[i] for i in index],
            [times[i] for i in index],
            [parsed.values[i] for i in index],
            _EMPTY,
            self.scorer.version,
            dead_letters=dead,
        )

    def _publish(self, sb: ScoredBatch) -> list[Any]:
        assert self._producer is not None and self.scorer is not None
        cfg = self.settings.kafka
        result = sb.result
        futures: list[Any] = []
        # Rows the scorer refused (a string where a number belongs...) are dead letters too.
        for row, (reason, message) in result.errors.items():
            sb.dead_letters.append((sb.scored_index[row], reason, message))
        batch = sb.batch
        for pos, reason, message in sb.dead_letters:
            futures.append(
                self._producer.send(
                    cfg.dead_letter_topic,
                    value=batch.values[pos],
                    key=batch.keys[pos],
                    headers=dead_letter_headers(_source(batch, pos), reason, message),
                )
            )
            self.metrics.dead_letters.labels(reason).inc()
        n_dead = len(sb.dead_letters)
        self.metrics.events.labels("dead_lettered").inc(n_dead)
        self.metrics.events.labels("scored").inc(len(batch) - n_dead)

        valid = np.isfinite(result.log_likelihood)
        if valid.any():
            self._observe_scores(result, valid)
        detected_ms = time.time() * 1000.0
        names = self.scorer.spec.features
        for row in result.alerting:
            row = int(row)
            entity, event_ms = sb.entities[row], sb.event_times_ms[row]
            send, suppressed = self.cooldown.admit(entity, int(result.severity[row]), event_ms)
            if not send:
                self.metrics.alerts_suppressed.inc()
                continue
            pos = sb.scored_index[row]
            alert = build_alert(
                result,
                row,
                source=_source(batch, pos),
                entity=entity,
                event_time_ms=event_ms,
                model_version=sb.model_version,
                feature_names=names,
                missing=result.feature_missing[row],
                detected_ms=detected_ms,
                suppressed_count=suppressed,
            )
            sb.alerts.append(alert)
            key = entity.encode() if entity is not None else batch.keys[pos]
            futures.append(
                self._producer.send(
                    cfg.alerts_topic,
                    value=orjson.dumps(alert, option=orjson.OPT_SERIALIZE_NUMPY),
                    key=key,
                )
            )
            self.metrics.alerts.labels(alert["severity"]).inc()
        return futures

    def _observe_scores(self, result: ScoreResult, valid: np.ndarray) -> None:
        unknown = int(result.unknown_categories.sum())
        if unknown:
            self.metrics.unknown_categories.inc(unknown)
        partial = int((result.feature_missing.any(axis=1) & valid).sum())
        if partial:
            self.metrics.missing_scored.inc(partial)
        # One histogram update per bucket per batch instead of one observe() per event.
        ll = result.log_likelihood[valid]
        hist = self.metrics.log_likelihood
        counts = np.histogram(ll, bins=[-np.inf, *hist._upper_bounds[:-1], np.inf])[0]
        for bucket, c in zip(hist._buckets, counts, strict=True):
            if c:
                bucket.inc(int(c))
        hist._sum.inc(float(ll.sum()))

    # -- commits -----------------------------------------------------------------------
    def _commit_ready(self) -> None:
        """Commit offsets of the leading batches whose sends are all acknowledged.

        Rate-limited to ``commit_interval_ms``: each commit is a broker round trip, and a
        commit that waits a few ms only widens what a crash would redeliver.
        """
        if self._transactions is not None:
            self._commit_transaction(force=False)
            return
        while self._pending and self._pending[0].done():
            head = self._pending.popleft()
            head.raise_if_failed()
            self._acked.update(head.offsets)
        now = time.monotonic()
        if self._acked and now >= self._next_commit:
            self._commit(self._acked, sync=False)
            self._acked = {}
            self._next_commit = now + self.settings.kafka.commit_interval_ms / 1000.0

    def _wait_oldest(self) -> None:
        head = self._pending[0]
        with self._stage("wait_acks"):
            for f in head.futures:
                f.get(timeout=self.settings.kafka.request_timeout_ms / 1000.0)  # raises if failed
        self._commit_ready()

    def _drain_and_commit(self) -> None:
        """Wait for every send in flight, then commit all processed offsets synchronously."""
        if self._producer is None or self._fetcher is None:
            return
        if self._transactions is not None:
            self._commit_transaction(force=True)
            return
        with self._stage("drain"):
            self._producer.flush(timeout=self.settings.service.shutdown_grace_s)
            ready, self._acked = self._acked, {}
            while self._pending:
                head = self._pending.popleft()
                if not head.done():
                    raise DeliveryError(
                        "sends still unacknowledged after the flush; not committing"
                    )
                head.raise_if_failed()
                ready.update(head.offsets)
            if ready:
                self._commit(ready, sync=True)

    def _commit(self, offsets: dict[TopicPartition, int], sync: bool) -> None:
        assert self._fetcher is not None
        with self._stage("commit"):
            self._fetcher.commit(offsets, sync)
        self.metrics.commits.inc()
        self.metrics.last_commit.set_to_current_time()

    def _commit_transaction(self, force: bool) -> None:
        """exactly_once: every processed batch's sends and offsets, one transaction.

        ``detector.stream.delivery`` says what it holds and how zombies are fenced.
        """
        assert self._transactions is not None and self._fetcher is not None
        if not self._pending or not (force or self._transactions.due()):
            return
        try:
            with self._stage("commit"):
                self._transactions.commit(self._pending, self._fetcher.group_metadata())
        except BaseException:
            # The aborted batches come again: per-entity state must not have seen them.
            self.cooldown = Cooldown(self.settings.service.alert_cooldown_s)
            if self.temporal is not None:
                self.temporal.reset()
            raise
        self.metrics.commits.inc()
        self.metrics.last_commit.set_to_current_time()

    @property
    def _advisory_producer(self) -> KafkaProducer:
        """Samples and drift events: outside the transaction (``detector.stream.delivery``)."""
        if self._transactions is not None and self._transactions.advisory is not None:
            return self._transactions.advisory
        assert self._producer is not None
        return self._producer

    # -- rebalances (the fetcher calls these) --------------------------------------------
    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        # Commit what is done before another replica takes these partitions over.
        self.metrics.rebalances.labels("revoked").inc()
        self._joining = True
        log.info("partitions revoked: %s", [f"{tp.topic}-{tp.partition}" for tp in partitions])
        self._drain_and_commit()
        if self.temporal is not None:
            self.temporal.reset()  # the new owner rebuilds from its own events (warm-up)

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assigned").inc()
        self.metrics.assigned_partitions.set(len(partitions))
        self.health.partitions = len(partitions)
        self._idle_since = time.monotonic()
        self._joining = False
        log.info("partitions assigned: %s", [f"{tp.topic}-{tp.partition}" for tp in partitions])

    # -- model -------------------------------------------------------------------------
    def _load_model(self, version: str | None) -> None:
        """Verify and load ``version`` (None = CURRENT) and score with it from now on."""
        started = time.perf_counter()
        self._swap_model(self.registry.load(version))
        self.metrics.model_load_seconds.set(time.perf_counter() - started)

    def _swap_model(self, bundle: Any) -> None:
        scorer = Scorer(bundle, self.settings.features, self.settings.thresholds)
        old = self.scorer.version if self.scorer else None
        self.scorer = scorer
        if old:
            self.metrics.model_info.remove(old)
        self.metrics.model_info.labels(scorer.version).set(1)
        windows = dict(scorer.spec.temporal)
        if not windows:
            self.temporal = None
        elif self.temporal is None or self.temporal.windows != windows:
            self.temporal = TemporalState(windows, self.settings.features.temporal_max_entities)
        self.metrics.model_loaded_at.set_to_current_time()
        self.health.model_version = scorer.version
        log.info("scoring with model %s (was %s)", scorer.version, old or "none")

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now < self._next_reload:
            return
        self._next_reload = now + self.settings.service.reload_interval_s
        current = self.registry.current()
        if (
            current is None
            or self.scorer is None
            or current == self.scorer.version
            or current in self._refused
        ):
            return
        try:
            self._load_model(current)
        except (ModelIntegrityError, RegistryError) as exc:
            self._refused.add(current)  # refused once, not retried until CURRENT changes again
            self.metrics.model_reloads.labels("refused").inc()
            log.error(
                "model %s refused, still scoring with %s: %s", current, self.scorer.version, exc
            )
            return
        self.metrics.model_reloads.labels("loaded").inc()

    def _evaluate_drift(self) -> None:
        # Every loop turn, idle ones included, so the verdict does not wait for traffic;
        # the monitor rate-limits itself. Drift events are advisory: not tied to offsets.
        try:
            self.drift.evaluate(self._advisory_producer if self._producer else None)
        except Exception:
            self.metrics.observer_errors.inc()
            log.exception("drift evaluation failed; scoring continues")

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag or self._fetcher is None:
            return
        self._next_lag = now + LAG_INTERVAL_S
        for tp, lag in self._fetcher.lag().items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)


def _source(batch: RecordBatch, pos: int) -> Source:
    return Source(
        batch.topics[pos], batch.partitions[pos], batch.offsets[pos], batch.timestamps_ms[pos]
    )


_EMPTY = ScoreResult(
    log_likelihood=np.empty(0),
    percentile=np.empty(0),
    severity=np.empty(0, dtype=np.int8),
    threshold=np.empty(0),
    severity_names=(),
    errors={},
    unknown_categories=np.empty(0, dtype=np.int64),
    feature_missing=np.empty((0, 0), dtype=bool),
    encoded=np.empty((0, 0)),
)
