"""Prometheus metrics of the service and the retraining job, in their own registry.

Each service instance owns a ``CollectorRegistry`` so two services in one process (tests,
the demo) never share counters. Names follow Prometheus conventions: ``_total`` counters,
``_seconds`` durations, base units everywhere.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.log_likelihood = Histogram(
            "detector_log_likelihood",
            "Log-likelihood of scored events.",
            buckets=_LL_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "detector_model_info", "1 for the model version in use.", ["version"], registry=r
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
