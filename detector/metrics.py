"""Prometheus metrics of the service and the retraining job, in their own registry.

Each service instance owns a ``CollectorRegistry`` so two services in one process (tests,
the demo) never share counters. Names follow Prometheus conventions: ``_total`` counters,
``_seconds`` durations, base units everywhere.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from detector.pipeline import BatchOutcome

# Stage durations per batch: 100 us .. 5 s covers a 1-event batch to a stalled broker.
_STAGE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000)
# Log-likelihoods of standardized data: thresholds usually sit between -40 and 10.
_LL_BUCKETS = (
    -1000.0,
    -200.0,
    -100.0,
    -50.0,
    -40.0,
    -30.0,
    -20.0,
    -15.0,
    -10.0,
    -5.0,
    0.0,
    5.0,
    10.0,
    20.0,
)


class BatchHistogram(Histogram):
    """A ``Histogram`` that also takes a whole batch of values in one call.

    ``observe()`` per event cost ~1 us each in the loop; one ``searchsorted`` and
    ``bincount`` per batch and one increment per bucket cost a few us per batch. prometheus-client has no batch
    API, so this is the one place that touches its per-bucket counters (``_buckets``,
    ``_sum``, ``_upper_bounds``); ``tests/unit/test_metrics.py`` checks the exposition
    is the same as ``observe()`` value by value, so a client release that changes them
    fails there, not in production.
    """

    def observe_batch(self, values: np.ndarray, sum_floor: float = -1e12) -> None:
        """Count finite ``values``; each enters the sum at no less than ``sum_floor``.

        A score near -1e308 is finite, but two of them overflow the sum (and one -inf
        would spoil the mean for ever); the buckets count them exactly. A histogram with a
        negative bucket (the log-likelihood's) has no ``_sum`` line on /metrics
        (prometheus-client follows OpenMetrics there), so its sum is not kept at all.
        """
        if values.size == 0:
            return
        # Prometheus buckets are "le": a value equal to a bound belongs to that bound's
        # bucket. np.histogram's bins are half-open the other way ([a, b)), which put a
        # score on a bound one bucket too high; searchsorted's left side gives exactly le.
        bucket_of = np.searchsorted(np.asarray(self._upper_bounds), values, side="left")
        counts = np.bincount(bucket_of, minlength=len(self._buckets))
        for bucket, count in zip(self._buckets, counts, strict=True):
            if count:
                bucket.inc(int(count))
        if self._upper_bounds[0] >= 0:  # prometheus-client exposes no sum below 0 either
            self._sum.inc(float(np.maximum(values, sum_floor).sum()))


def metric_value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The current value of one sample (``name`` as exposed, e.g. ``..._total``); 0 if absent.

    Through the registry's public ``get_sample_value``, for the CLI, the demo, the bench and
    the tests: a read per report line, never on the hot path.
    """
    value = registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def current(metric: Counter | Gauge) -> float:
    """A counter's or gauge's value now; for a labelled parent, the sum over its children.

    Through the public ``collect()``: for tests and reports, never on the hot path.
    """
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    )


class ServiceMetrics:
    """Everything the detector service exports on /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "detector_events_total",
            "Consumed records by final outcome: scored or dead_lettered (consumed = sum).",
            ["outcome"],
            registry=r,
        )
        self.consumed = Counter(
            "detector_consumed_total", "Records consumed from the input topic.", registry=r
        )
        self.alerts = Counter(
            "detector_alerts_total", "Alerts published, by severity.", ["severity"], registry=r
        )
        self.alerts_suppressed = Counter(
            "detector_alerts_suppressed_total",
            "Alerts held back by the per-entity cooldown.",
            registry=r,
        )
        self.dead_letters = Counter(
            "detector_dead_letters_total",
            "Dead letters published, by reason code.",
            ["reason"],
            registry=r,
        )
        self.unknown_categories = Counter(
            "detector_unknown_categories_total",
            "Categorical values never seen in training.",
            registry=r,
        )
        self.missing_scored = Counter(
            "detector_rows_with_missing_values_total",
            "Rows scored with some features missing.",
            registry=r,
        )
        self.batch_size = Histogram(
            "detector_batch_size", "Records per polled batch.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.stage_seconds = Histogram(
            "detector_stage_duration_seconds",
            "Time per batch in each stage of the loop.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.log_likelihood = BatchHistogram(
            "detector_log_likelihood",
            "Log-likelihood of scored events.",
            buckets=_LL_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "detector_model_info", "1 for the model version in use.", ["version"], registry=r
        )
        self.kafka_client_info = Gauge(
            "detector_kafka_client_info",
            "1 for the Kafka client of the session running (kafka.client), by its transport.",
            ["client", "transport"],
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "detector_model_load_seconds", "Time to verify and load the model in use.", registry=r
        )
        self.model_loaded_at = Gauge(
            "detector_model_loaded_timestamp_seconds",
            "When the model in use was loaded.",
            registry=r,
        )
        self.model_reloads = Counter(
            "detector_model_reloads_total",
            "Hot reloads by outcome: loaded or refused.",
            ["outcome"],
            registry=r,
        )
        self.lag = Gauge(
            "detector_consumer_lag",
            "High watermark minus position, per partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.last_commit = Gauge(
            "detector_last_commit_timestamp_seconds",
            "When offsets were last committed.",
            registry=r,
        )
        self.commits = Counter("detector_commits_total", "Offset commits issued.", registry=r)
        self.rebalances = Counter(
            "detector_rebalances_total",
            "Partition assignments and revocations.",
            ["kind"],
            registry=r,
        )
        self.assigned_partitions = Gauge(
            "detector_assigned_partitions", "Input partitions this replica owns.", registry=r
        )
        self.broker_errors = Counter(
            "detector_broker_errors_total",
            "Kafka errors that restarted the consumer session.",
            registry=r,
        )
        self.samples = Counter(
            "detector_samples_published_total",
            "Rows published to the samples topic.",
            ["alerted"],
            registry=r,
        )
        self.samples_skipped = Counter(
            "detector_samples_skipped_total",
            "Sampled rows not published: one row alone was over the producer's max_request_size.",
            registry=r,
        )
        self.drift_statistic = Gauge(
            "detector_drift_statistic",
            "Current drift statistics over the sliding window.",
            ["test"],
            registry=r,
        )
        self.feature_psi = Gauge(
            "detector_feature_psi",
            "Population stability index per feature over the window.",
            ["feature"],
            registry=r,
        )
        self.drift_detected = Gauge(
            "detector_drift_detected",
            "1 while a drift test is over its threshold.",
            ["test"],
            registry=r,
        )
        self.drift_events = Counter(
            "detector_drift_events_total", "Drift events raised.", ["test"], registry=r
        )
        self.observer_errors = Counter(
            "detector_observer_errors_total",
            "Failures of batch observers (drift, sampling).",
            registry=r,
        )
        self.state_evictions = Counter(
            "detector_state_evictions_total",
            "Entities forgotten to keep per-entity state bounded, by state: cooldown (its next "
            "alert is sent even inside the cooldown) or temporal (it warms up again).",
            ["state"],
            registry=r,
        )
        self.batch_retries = Counter(
            "detector_batch_retries_total",
            "Batch-level failures of a vectorized stage, retried record by record, by stage.",
            ["stage"],
            registry=r,
        )
        self.dead_letters_truncated = Counter(
            "detector_dead_letters_truncated_total",
            "Dead letters too large for the producer, sent truncated with detector.original.* headers.",
            registry=r,
        )
        self.temporal_warmup = Counter(
            "detector_temporal_warmup_rows_total",
            "Rows scored on point-wise features only while an entity's temporal state warms up.",
            registry=r,
        )

    def count_outcome(self, outcome: BatchOutcome) -> None:
        """Count what every record of a processed batch became, and what scoring saw."""
        for d in outcome.dead_letters:
            self.dead_letters.labels(d.reason.value).inc()
            if d.truncated:
                self.dead_letters_truncated.inc()
        self.events.labels("dead_lettered").inc(len(outcome.dead_letters))
        self.events.labels("scored").inc(outcome.n_scored)
        for stage in outcome.retried:
            self.batch_retries.labels(stage).inc()
        if outcome.temporal_warmup_rows:
            self.temporal_warmup.inc(outcome.temporal_warmup_rows)
        if outcome.suppressed:
            self.alerts_suppressed.inc(outcome.suppressed)
        for state, n in outcome.evictions.items():
            if n:
                self.state_evictions.labels(state).inc(n)
        # One labelled child per severity, not per alert (a child lookup is a lock and a hash).
        for severity, n in collections.Counter(a.severity for a in outcome.alerts).items():
            self.alerts.labels(severity).inc(n)
        result = outcome.scored.result
        valid = np.isfinite(result.log_likelihood)
        if not valid.any():
            return
        unknown = int(result.unknown_categories.sum())
        if unknown:
            self.unknown_categories.inc(unknown)
        partial = int((result.feature_missing.any(axis=1) & valid).sum())
        if partial:
            self.missing_scored.inc(partial)
        self.log_likelihood.observe_batch(result.log_likelihood[valid])

    def counts(self) -> Counts:
        """What the service has done so far, for a stop line, the demo and the bench."""
        r = self.registry
        by_severity: dict[str, int] = {}
        for family in self.alerts.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    by_severity[sample.labels["severity"]] = int(sample.value)
        return Counts(
            consumed=int(metric_value(r, "detector_consumed_total")),
            scored=int(metric_value(r, "detector_events_total", outcome="scored")),
            dead_lettered=int(metric_value(r, "detector_events_total", outcome="dead_lettered")),
            alerts_by_severity=by_severity,
        )


@dataclass(frozen=True)
class Counts:
    consumed: int
    scored: int
    dead_lettered: int
    alerts_by_severity: dict[str, int]

    @property
    def alerts(self) -> int:
        return sum(self.alerts_by_severity.values())


class RetrainMetrics:
    """What the retraining job exports (pushed to its own /metrics while it runs)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.runs = Counter(
            "detector_retrain_runs_total", "Retraining runs by outcome.", ["outcome"], registry=r
        )
        self.refusals = Counter(
            "detector_retrain_refused_total", "Refused windows by reason.", ["reason"], registry=r
        )
        self.duration = Gauge(
            "detector_retrain_duration_seconds", "Duration of the last run.", registry=r
        )
        self.window_size = Gauge(
            "detector_retrain_window_rows", "Rows in the last window.", registry=r
        )
        self.validation = Gauge(
            "detector_retrain_validation",
            "Validation figures of the last candidate.",
            ["figure"],
            registry=r,
        )
