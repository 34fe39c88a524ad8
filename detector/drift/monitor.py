"""Drift statistics over a sliding window of recent events, and the samples topic feed.

Two observers of scored batches, each vectorized per batch:

* ``Sampler`` publishes a random share of scored rows to the samples topic (the values
  the model saw, entity, event time, log-likelihood, whether it alerted): the window the
  retraining job learns from.
* ``DriftMonitor`` keeps the last ``window_events`` log-likelihoods, alert flags and
  feature values in ring buffers and tests them against the model's calibration:
  the alert rate (one-sided binomial test against the calibrated rate), the mean
  log-likelihood of the non-alerting events (z-score against the calibration rows that
  do not alert) and each numeric feature's
  population stability index (PSI) against the training histogram. A test crossing its
  threshold logs once, sets a metric and publishes a drift event with the evidence; it
  clears only when the statistic is back past ``clear_ratio`` of the threshold.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import orjson
from scipy.stats import binom

from detector.events import format_time_ms
from detector.metrics import ServiceMetrics
from detector.model.scorer import Scorer
from detector.pipeline.letters import DEFAULT_MAX_MESSAGE_BYTES, usable_bytes
from detector.settings import DriftSettings, KafkaSettings

if TYPE_CHECKING:
    from detector.pipeline import ScoredBatch

log = logging.getLogger(__name__)

# Drift statistics are recomputed at most this often: a few ms of numpy each time.
EVALUATE_INTERVAL_S = 1.0
# Empty PSI bins get this share instead of zero, so the log stays finite (common practice).
PSI_EPSILON = 1e-4
# Drift events kept in memory for the demo and tests (all of them go to the drift topic).
RECENT_DRIFT_EVENTS = 100


class Sender(Protocol):
    """Where samples and drift events go: a ``KafkaProducer`` in the service, a list in memory
    for the backtest (``detector.backtest.memory.MemoryTopic``)."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Any: ...


def psi(expected_counts: np.ndarray, actual_counts: np.ndarray) -> float:
    """Population stability index: sum((a - e) * ln(a / e)) over bins of shares."""
    e = np.maximum(expected_counts / max(1, expected_counts.sum()), PSI_EPSILON)
    a = np.maximum(actual_counts / max(1, actual_counts.sum()), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _split_rows(
    model_version: str, rows: list[dict[str, Any]], limit_bytes: int, metrics: ServiceMetrics
) -> list[bytes]:
    """Samples documents ``{"model_version", "rows"}`` of at most ``limit_bytes`` each."""
    head = orjson.dumps({"model_version": model_version, "rows": []})[:-2]  # ...,"rows":[
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = len(head) + 2
    for row in rows:
        encoded = orjson.dumps(row)
        if len(head) + len(encoded) + 2 > limit_bytes:  # one row alone is too large: not sent
            metrics.samples_skipped.inc()
            continue
        if chunk and size + len(encoded) + 1 > limit_bytes:
            out.append(head + b",".join(chunk) + b"]}")
            chunk, size = [], len(head) + 2
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        out.append(head + b",".join(chunk) + b"]}")
    return out


class Sampler:
    """Publishes a random share of each batch to the samples topic, one message per batch."""

    def __init__(
        self, drift: DriftSettings, kafka: KafkaSettings, metrics: ServiceMetrics, seed: int = 0
    ) -> None:
        self.rate = drift.sample_rate
        self.cap = drift.max_samples_per_batch
        self.include_alerted = drift.include_alerted
        self.topic = kafka.samples_topic
        self.metrics = metrics
        self.rng = np.random.default_rng(seed)

    def __call__(self, sb: ScoredBatch, producer: Sender) -> list[Any]:
        if self.rate <= 0 or not sb.values:
            return []
        result = sb.result
        scored = np.isfinite(result.log_likelihood)
        alerted = result.severity > 0
        eligible = scored if self.include_alerted else scored & ~alerted
        pick = np.flatnonzero(eligible & (self.rng.random(scored.size) < self.rate))[: self.cap]
        if pick.size == 0:
            return []
        ll = result.log_likelihood
        rows = [
            {
                "entity": sb.entities[row],
                "event_time_ms": sb.event_times_ms[row],
                "values": sb.values[row],
                "log_likelihood": float(ll[row]),
                "alerted": bool(alerted[row]),
            }
            for row in pick.tolist()
        ]
        # One message per batch (a send costs tens of microseconds, a row's JSON far less),
        # split where it would pass the producer's max_request_size: a failed send would
        # stop the batch's commit, and the same batch would fail again on every retry.
        limit = usable_bytes(
            getattr(producer, "config", {}).get("max_request_size", DEFAULT_MAX_MESSAGE_BYTES)
        )
        futures = [
            producer.send(self.topic, value=value)
            for value in _split_rows(sb.model_version, rows, limit, self.metrics)
        ]
        n_alerted = int(alerted[pick].sum())
        if n_alerted:
            self.metrics.samples.labels("true").inc(n_alerted)
        if pick.size - n_alerted:
            self.metrics.samples.labels("false").inc(pick.size - n_alerted)
        return futures


class DriftMonitor:
    """Sliding-window drift tests against the model's calibration and reference data."""

    def __init__(
        self,
        drift: DriftSettings,
        kafka: KafkaSettings,
        metrics: ServiceMetrics,
        clock_ms: Callable[[], float] | None = None,
    ) -> None:
        self.cfg = drift
        # The drift event's detected_at: the wall clock in the service, event time in a backtest.
        self.clock_ms = clock_ms or (lambda: time.time() * 1000.0)
        self.topic = kafka.drift_topic
        self.metrics = metrics
        self.version: str | None = None
        self.firing: dict[str, bool] = {}
        self.last: dict[str, Any] = {}
        # The latest drift events, for the demo and tests: bounded, a service runs for months.
        self.events: deque[dict[str, Any]] = deque(maxlen=RECENT_DRIFT_EVENTS)
        self.raised = 0  # drift events raised since start
        self._next_eval = 0.0

    def events_since(self, seen: int) -> list[dict[str, Any]]:
        """The events raised after the first ``seen`` of ``raised`` (those still kept)."""
        new = self.raised - seen
        return list(self.events)[-new:] if new > 0 else []

    def _reset(self, scorer: Scorer) -> None:
        bundle = scorer.bundle
        self.version = scorer.version
        w = self.cfg.window_events
        self._names = list(bundle.spec.numeric)
        self._ll = np.zeros(w)
        self._alert = np.zeros(w, dtype=bool)
        self._x = np.zeros((w, len(self._names)))
        self._filled = 0
        self._head = 0
        summary = bundle.summary
        self._target_rate = bundle.thresholds.alert_rate
        self._cal_mean = float(summary["calibration_normal_mean_log_likelihood"])
        self._cal_std = float(summary["calibration_normal_std_log_likelihood"]) or 1.0
        ref = summary.get("reference", {})
        self._edges = [np.asarray(ref[n]["bin_edges"]) for n in self._names]
        self._ref_counts = [np.asarray(ref[n]["bin_counts"], dtype=np.float64) for n in self._names]
        self.firing = {}
        self.last = {}

    def observe(self, sb: ScoredBatch, scorer: Scorer) -> None:
        if scorer.version != self.version:
            self._reset(scorer)  # a new model has its own calibration: start a fresh window
        result = sb.result
        ok = np.flatnonzero(np.isfinite(result.log_likelihood))
        if ok.size == 0:
            return
        # Numeric columns come first in the encoding, already log1p-transformed where configured.
        x = result.encoded[ok, : len(self._names)]
        self._push(result.log_likelihood[ok], result.severity[ok] > 0, x)

    def _push(self, ll: np.ndarray, alert: np.ndarray, x: np.ndarray) -> None:
        w = self._ll.size
        if ll.size >= w:
            ll, alert, x = ll[-w:], alert[-w:], x[-w:]
        idx = (self._head + np.arange(ll.size)) % w
        self._ll[idx], self._alert[idx], self._x[idx] = ll, alert, x
        self._head = int((self._head + ll.size) % w)
        self._filled = min(w, self._filled + ll.size)

    def statistics(self) -> dict[str, Any]:
        n = self._filled
        ll, alert, x = self._ll[:n], self._alert[:n], self._x[:n]
        k = int(alert.sum())
        p_value = float(binom.sf(k - 1, n, self._target_rate)) if n else 1.0
        # Non-alerting rows only: faults alert and are the alert test's business; a drift
        # moves the bulk of the distribution, which is what this test watches.
        bulk = ll[~alert]
        m = bulk.size
        z = (float(bulk.mean()) - self._cal_mean) / (self._cal_std / np.sqrt(m)) if m else 0.0
        psis = {}
        for j, name in enumerate(self._names):
            col = x[:, j]
            col = col[np.isfinite(col)]
            counts = np.bincount(
                np.searchsorted(self._edges[j], col, side="right"),
                minlength=self._edges[j].size + 1,
            )
            psis[name] = psi(self._ref_counts[j], counts.astype(np.float64))
        return {
            "window_events": n,
            "alert_rate": k / n if n else 0.0,
            "target_alert_rate": self._target_rate,
            "alert_rate_p_value": p_value,
            "non_alerting_mean_log_likelihood": float(bulk.mean()) if m else None,
            "calibration_mean_log_likelihood": self._cal_mean,
            "mean_log_likelihood_z": float(z),
            "psi": {k: float(v) for k, v in psis.items()},
        }

    def evaluate(self, producer: Sender | None, now: float | None = None) -> list[Any]:
        """Recompute the tests (rate-limited); raise drift events on rising edges."""
        now = time.monotonic() if now is None else now
        if now < self._next_eval or self.version is None:
            return []
        self._next_eval = now + EVALUATE_INTERVAL_S
        stats = self.statistics()
        self.last = stats
        m = self.metrics
        m.drift_statistic.labels("alert_rate").set(stats["alert_rate"])
        m.drift_statistic.labels("alert_rate_p_value").set(stats["alert_rate_p_value"])
        m.drift_statistic.labels("mean_log_likelihood_z").set(stats["mean_log_likelihood_z"])
        m.drift_statistic.labels("window_events").set(stats["window_events"])
        for name, value in stats["psi"].items():
            m.feature_psi.labels(name).set(value)
        if stats["window_events"] < self.cfg.min_window_events:
            return []
        worst_psi = max(stats["psi"].items(), key=lambda kv: kv[1], default=("", 0.0))
        # Hysteresis: a firing test clears only once its statistic is back past a looser
        # bound (half the threshold; for the p-value, half of it in log scale), so a window
        # hovering at the threshold raises one event, not one every few seconds.
        c = self.cfg.clear_ratio
        firing = self.firing.get
        p_bound = self.cfg.alert_rate_p_value ** (c if firing("alert_rate") else 1.0)
        z_bound = self.cfg.mean_ll_z * (c if firing("mean_log_likelihood") else 1.0)
        psi_bound = self.cfg.psi_threshold * (c if firing("psi") else 1.0)
        verdicts = {
            "alert_rate": stats["alert_rate_p_value"] < p_bound
            and stats["alert_rate"] > stats["target_alert_rate"],
            "mean_log_likelihood": stats["mean_log_likelihood_z"] < -z_bound,
            "psi": worst_psi[1] > psi_bound,
        }
        futures: list[Any] = []
        for test, fired in verdicts.items():
            m.drift_detected.labels(test).set(1 if fired else 0)
            if fired and not self.firing.get(test):
                futures.extend(self._raise(test, stats, worst_psi, producer))
            self.firing[test] = fired
        return futures

    def _raise(
        self,
        test: str,
        stats: dict[str, Any],
        worst_psi: tuple[str, float],
        producer: Sender | None,
    ) -> list[Any]:
        event = {
            "type": "drift",
            "test": test,
            "detected_at": format_time_ms(self.clock_ms()),
            "model_version": self.version,
            "thresholds": {
                "alert_rate_p_value": self.cfg.alert_rate_p_value,
                "mean_ll_z": self.cfg.mean_ll_z,
                "psi": self.cfg.psi_threshold,
            },
            "most_shifted_feature": worst_psi[0],
            "evidence": stats,
        }
        self.events.append(event)
        self.raised += 1
        self.metrics.drift_events.labels(test).inc()
        log.warning(
            "drift detected by %s test on model %s: alert rate %.2f%% (target %.2f%%), mean log-likelihood z %.1f, worst PSI %s=%.2f",
            test,
            self.version,
            100 * stats["alert_rate"],
            100 * stats["target_alert_rate"],
            stats["mean_log_likelihood_z"],
            worst_psi[0],
            worst_psi[1],
        )
        if producer is None or not self.cfg.publish_events:
            return []
        return [
            producer.send(self.topic, value=orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY))
        ]


class DriftObserver:
    """Adapter: the monitor as a service observer (feeds every batch into the window)."""

    def __init__(self, monitor: DriftMonitor, scorer_of: Any) -> None:
        self.monitor = monitor
        self.scorer_of = scorer_of

    def __call__(self, sb: ScoredBatch, producer: Sender) -> list[Any]:
        scorer = self.scorer_of()
        if scorer is None:
            return []
        self.monitor.observe(sb, scorer)
        return []
