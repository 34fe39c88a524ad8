"""The detector service: the consumer loop of DESIGN.md, one named call per stage.

    poll -> process (parse, score, alerts, dead letters: detector.pipeline) -> publish
         -> commit once acknowledged (stream.commits) -> drift -> reload (stream.models)

The Kafka client is the transport ``kafka.client`` names (``detector.stream.transport``);
the loop is the same on each. At-least-once: a batch's offsets are committed only after
every alert and dead letter it produced is acknowledged (``detector.stream.offsets``); a
failed send ends the session uncommitted and the next one processes the batch again.
With ``kafka.delivery = "exactly_once"`` the commit is a Kafka transaction holding the
batches' alerts, dead letters and offsets (``detector.stream.delivery``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from detector.drift.monitor import DriftMonitor, DriftObserver, Sampler
from detector.errors import (
    BrokerUnavailableError,
)
from detector.events import EventParser
from detector.features.temporal import TemporalState
from detector.health import HealthState
from detector.logs import session_end_reason
from detector.metrics import ServiceMetrics
from detector.model.scorer import Scorer
from detector.pipeline import PipelineState, ScoredBatch, process
from detector.registry.store import ModelRegistry
from detector.registry.topic import open_registry
from detector.settings import Settings
from detector.stream.alerts import Cooldown
from detector.stream.commits import Committer
from detector.stream.delivery import Transactions, exactly_once
from detector.stream.fetcher import (
    Fetcher,
    FetcherError,
    FetchStatus,
    PolledBatch,
)
from detector.stream.memory import HeapTrimmer, tuned_for_scoring
from detector.stream.models import ModelFollower
from detector.stream.offsets import DeliveryError, OffsetBook
from detector.stream.reach import Backoff, BrokerWatch, check_reachable
from detector.stream.sinks import publish
from detector.stream.transport import Serve, no_serve, open_fetcher, open_producer

log = logging.getLogger(__name__)

# Batches whose sends may be in flight before the loop waits for the oldest: bounds
# memory and the redelivery after a crash, while one slow ack never stalls the loop.
MAX_PENDING_BATCHES = 16
# Lag is read from the fetcher's cached high watermarks; once a second is plenty.
LAG_INTERVAL_S = 1.0
# Back-off between Kafka sessions after an error: 0.5 s doubling up to 30 s.
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
# A revocation's drain and commit taking longer than this is logged: partitions wait on it.
SLOW_HAND_OVER_S = 5.0


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
        self.registry = registry or open_registry(settings.registry, settings.kafka)
        self.metrics = metrics or ServiceMetrics()
        self.health = HealthState(
            settings.service.heartbeat_stale_s, commit_overdue_s=commit_overdue_s(settings)
        )
        # The model in use, followed in the registry (hot reload).
        self.models = ModelFollower(settings, self.registry, self.metrics, self.health)
        self.parser = EventParser(settings.event)
        self.cooldown = Cooldown(settings.service.alert_cooldown_s)
        # The drift window: samples for the retraining job, drift tests over recent events.
        self.drift = DriftMonitor(settings.drift, settings.kafka, self.metrics)
        self.observers: list[BatchObserver] = [
            Sampler(settings.drift, settings.kafka, self.metrics, seed=settings.model.random_seed),
            DriftObserver(self.drift, lambda: self.models.scorer),
            *(observers or []),
        ]
        self.stage_seconds: dict[str, float] = {}
        self._stage_timers: dict[str, Any] = {}
        self._stop = threading.Event()
        self._next_lag = 0.0
        self._trim_heap = HeapTrimmer()
        self.commits = Committer(
            settings, self.metrics, self.health, self._stage, on_abort=self._forget_entities
        )
        self._fetcher: Fetcher | None = None
        self._producer: KafkaProducer | None = None
        self._transactions: Transactions | None = None  # kafka.delivery = "exactly_once"
        self.consumed = 0
        self._idle_since = time.monotonic()  # the last record or assignment, for idle_timeout_s
        self._joining = True  # between a revocation (or the start) and the next assignment
        self._session_connected = False  # this session's producer reached the cluster
        # A broker lost mid-session: our own TCP check, one line per check with back-off.
        self._broker_watch = BrokerWatch(
            settings.kafka.bootstrap_servers, self.metrics.broker_errors, self.health
        )

    @property
    def offsets(self) -> OffsetBook:
        return self.commits.offsets

    def _forget_entities(self) -> None:
        """An aborted transaction's batches come again: per-entity state must not have
        seen them."""
        self.cooldown = Cooldown(self.settings.service.alert_cooldown_s)
        if self.temporal is not None:
            self.temporal.reset()

    @property
    def scorer(self) -> Scorer | None:
        return self.models.scorer

    @property
    def temporal(self) -> TemporalState | None:
        return self.models.temporal

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
        meanwhile), one log line per attempt; nothing is committed that was not
        acknowledged. A session starts with a TCP check of the bootstrap servers.
        """
        with tuned_for_scoring():  # memory, GC and BLAS set up for the loop (stream/memory)
            self._serve(max_events, idle_timeout_s)

    def _serve(self, max_events: int | None, idle_timeout_s: float | None) -> None:
        backoff = Backoff(BACKOFF_START_S, BACKOFF_MAX_S)
        while not self.stopping:
            if self.scorer is None and not self.models.load_initial():
                self._stop.wait(max(1.0, self.settings.service.reload_interval_s))
                continue
            self._session_connected = False
            try:
                if self._session(max_events, idle_timeout_s):
                    return
            except (
                BrokerUnavailableError,
                KafkaError,
                DeliveryError,
                FetcherError,
                OSError,
            ) as exc:
                self.metrics.broker_errors.inc()
                self.health.connected = False
                if self._session_connected:
                    backoff.reset()  # a session that got going starts the back-off afresh
                self.health.reason = session_end_reason(
                    exc, self.settings.kafka.bootstrap_servers, self._session_connected
                )
                delay_s = backoff.next_delay_s()
                # The one line per attempt: kafka-python's own lines about it are filtered.
                log.warning("%s; retry %d in %.1f s", self.health.reason, backoff.failures, delay_s)
                self._stop.wait(delay_s)

    def _session(self, max_events: int | None, idle_timeout_s: float | None) -> bool:
        cfg = self.settings.kafka
        self.commits.start()
        self.health.broker_problem = None
        self.health.held = {}
        try:
            check_reachable(cfg.bootstrap_servers, cfg.bootstrap_timeout_ms / 1000.0)
            serve: Serve = no_serve
            if exactly_once(cfg):
                self._transactions = Transactions(cfg)
                self._producer = self._transactions.producer
            else:
                self._producer, serve = open_producer(cfg)
            self._session_connected = True
            self._broker_watch.restart()
            self._fetcher = open_fetcher(self.settings, self)
            self.commits.attach(self._fetcher, self._producer, self._transactions, serve)
            self.metrics.kafka_client_info.clear()
            self.metrics.kafka_client_info.labels(cfg.client, type(self._fetcher).__name__).set(1)
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
                self._broker_watch(got_records=bool(batch))
                if batch:
                    self._idle_since = time.monotonic()
                    self._process(batch)
                self.commits.ready()
                self._evaluate_drift()
                self.models.maybe_reload()
                self._update_lag()
                self._trim_heap()
                if max_events is not None and self.consumed >= max_events:
                    break
                # A group join is not idleness (after a crash it can take a session timeout).
                idle_s = time.monotonic() - self._idle_since
                if idle_timeout_s is not None and not self._joining and idle_s > idle_timeout_s:
                    break
            self.commits.drain()
            return True
        finally:
            self._close()

    def _close(self) -> None:
        fetcher, producer = self._fetcher, self._producer
        self._fetcher, self._producer = None, None
        self.commits.detach()
        if self._transactions is not None:
            self._transactions.close(self.settings.service.shutdown_grace_s)
            self._transactions = None
        self.health.connected = False
        self.health.reason = "session closing"
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
        timer = self._stage_timers.get(name)
        if timer is None:  # a labelled child per stage, looked up once
            timer = self._stage_timers[name] = self.metrics.stage_seconds.labels(name)
        timer.observe(took)
        self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + took

    def _poll(self) -> PolledBatch | None:
        assert self._fetcher is not None
        with self._stage("poll"):
            return self._fetcher.poll(self.settings.service.poll_timeout_ms)

    def _process(self, batch: PolledBatch) -> None:
        assert self.scorer is not None and self._producer is not None
        n = len(batch)
        self.consumed += n
        self.metrics.consumed.inc(n)
        self.metrics.batch_size.observe(n)
        # Parse, temporal features, score, build alerts and dead letters: no Kafka in there,
        # and nothing a record holds can make it raise (detector.pipeline).
        state = PipelineState(self.parser, self.cooldown, self.temporal)
        outcome = process(
            batch,
            self.scorer,
            state,
            max_request_size=int(self._producer.config.get("max_request_size", 1_048_576)),
            stage=self._stage,
        )
        with self._stage("publish"):
            futures = publish(outcome, self._producer, self.settings.kafka)
            self.metrics.count_outcome(outcome)
        scored_batch = outcome.scored
        with self._stage("observe"):
            for observer in self.observers:
                try:
                    futures.extend(observer(scored_batch, self._advisory_producer))
                except Exception:
                    # Drift and sampling are advisory: a failure there must not stop scoring.
                    self.metrics.observer_errors.inc()
                    log.exception("batch observer %r failed; scoring continues", observer)
        self.commits.processed(batch.next_offsets, futures)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "batch of %d: %d scored, %d alerts, %d dead letters, %d sends in flight",
                n,
                outcome.n_scored,
                len(outcome.alerts),
                len(outcome.dead_letters),
                sum(len(p.futures) for p in self.offsets.pending),
            )
        if len(self.offsets.pending) > MAX_PENDING_BATCHES:
            self.commits.wait_oldest()

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
        self.health.partitions = 0  # not ready while the group rebalances
        log.info("partitions revoked: %s", [f"{tp.topic}-{tp.partition}" for tp in partitions])
        started = time.monotonic()
        self.commits.drain()
        took_s = time.monotonic() - started
        if took_s > SLOW_HAND_OVER_S:
            # (the fetch process logs its side, with the client's coordinator lines)
            log.warning("handing partitions over took %.1f s (flush and commit)", took_s)
        if self.temporal is not None:
            self.temporal.reset()  # the new owner rebuilds from its own events (warm-up)

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        # The group no longer counts this member: a commit would be refused. What was
        # processed and not committed is redelivered to whoever gets the partitions
        # (this replica, often), with the same alert ids.
        self.metrics.rebalances.labels("lost").inc()
        self._joining = True
        self.health.partitions = 0
        log.warning(
            "partitions lost (the group dropped this member): %s; their uncommitted work "
            "will be redelivered",
            [f"{tp.topic}-{tp.partition}" for tp in partitions],
        )
        if self._producer is not None:
            self._producer.flush(timeout=self.settings.service.shutdown_grace_s)
        self.commits.forget()
        if self.temporal is not None:
            self.temporal.reset()

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assigned").inc()
        self.metrics.assigned_partitions.set(len(partitions))
        self.health.partitions = len(partitions)
        self._idle_since = time.monotonic()
        self._joining = False
        log.info("partitions assigned: %s", [f"{tp.topic}-{tp.partition}" for tp in partitions])

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
        status: FetchStatus = self._fetcher.status()
        self.health.broker_problem = status.broker_problem
        self.health.held = status.held
        for tp, lag in status.lag.items():
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)


def commit_overdue_s(settings: Settings) -> float:
    """Processed work older than this and still not committed makes /readyz fail.

    A healthy commit follows its batch's acknowledgements by at most the commit interval,
    and a commit or send that gets no answer fails after the request timeout.
    """
    return (settings.kafka.commit_interval_ms + settings.kafka.request_timeout_ms) / 1000.0
