"""Drift statistics: quiet on normal data, firing on a shift, PSI arithmetic."""

from __future__ import annotations

import numpy as np

from detector.drift.monitor import RECENT_DRIFT_EVENTS, DriftMonitor, psi
from detector.metrics import ServiceMetrics
from detector.model.scorer import Scorer
from detector.pipeline import ScoredBatch
from detector.settings import DriftSettings, KafkaSettings
from tests.unit.conftest import as_rows, mixture_sample


def feed(monitor: DriftMonitor, scorer: Scorer, x: np.ndarray, batch: int = 500) -> None:
    for start in range(0, len(x), batch):
        rows = as_rows(x[start : start + batch])
        result = scorer.score(rows)
        n = len(rows)
        sb = ScoredBatch(
            [None] * n, list(range(n)), ["e"] * n, [0] * n, rows, result, scorer.version
        )
        monitor.observe(sb, scorer)


def test_psi_is_zero_for_equal_shares_and_grows_with_a_shift() -> None:
    ref = np.array([100.0, 100, 100, 100])
    assert psi(ref, ref) == 0.0
    assert psi(ref, np.array([10.0, 40, 150, 200])) > 0.25


def test_quiet_on_normal_data_and_fires_once_on_a_shift(big_bundle) -> None:
    scorer = Scorer(big_bundle)
    monitor = DriftMonitor(
        DriftSettings(window_events=5000, min_window_events=2000), KafkaSettings(), ServiceMetrics()
    )
    # Given 10,000 normal events: no test fires
    feed(monitor, scorer, mixture_sample(10_000, seed=40))
    assert monitor.evaluate(None, now=1.0) == []
    assert not any(monitor.firing.values()), monitor.last
    assert abs(monitor.last["alert_rate"] - 0.01) < 0.005
    # When every feature shifts by 1.5 standard deviations
    feed(monitor, scorer, mixture_sample(5_000, seed=41) + 1.5)
    monitor.evaluate(None, now=10.0)
    # Then the alert-rate, mean log-likelihood and PSI tests all fire, each raising one event
    assert monitor.firing == {"alert_rate": True, "mean_log_likelihood": True, "psi": True}
    assert {e["test"] for e in monitor.events} == {"alert_rate", "mean_log_likelihood", "psi"}
    monitor.evaluate(None, now=20.0)
    assert len(monitor.events) == 3  # still firing: no repeated events


def test_a_few_extreme_anomalies_are_not_a_distribution_drift(big_bundle) -> None:
    scorer = Scorer(big_bundle)
    monitor = DriftMonitor(
        DriftSettings(window_events=5000, min_window_events=2000), KafkaSettings(), ServiceMetrics()
    )
    x = mixture_sample(5_000, seed=42)
    x[::50, 0] += 40.0  # 2% far-out faults
    feed(monitor, scorer, x)
    monitor.evaluate(None, now=1.0)
    assert monitor.firing["alert_rate"] is True
    assert monitor.firing["mean_log_likelihood"] is False and monitor.firing["psi"] is False


def monitor_on_normal_data(bundle, seed: int) -> tuple[DriftMonitor, dict]:
    """A monitor (mean log-likelihood test at z = -6) fed normal events, and its statistics."""
    scorer = Scorer(bundle)
    monitor = DriftMonitor(
        DriftSettings(window_events=5000, min_window_events=2000, mean_ll_z=6.0),
        KafkaSettings(),
        ServiceMetrics(),
    )
    feed(monitor, scorer, mixture_sample(5_000, seed=seed))
    return monitor, monitor.statistics()


def test_a_firing_test_clears_only_past_half_its_threshold(big_bundle) -> None:
    monitor, real = monitor_on_normal_data(big_bundle, seed=43)

    def with_z(z: float):
        return lambda: {**real, "mean_log_likelihood_z": z}

    # Given the mean log-likelihood test fired at z = -7
    monitor.statistics = with_z(-7.0)  # type: ignore[method-assign]
    monitor.evaluate(None, now=1.0)
    assert monitor.firing["mean_log_likelihood"] is True
    # When the window hovers around the threshold (-5, -7, -4)
    for t, z in enumerate((-5.0, -7.0, -4.0), start=2):
        monitor.statistics = with_z(z)  # type: ignore[method-assign]
        monitor.evaluate(None, now=float(t))
    # Then it stays firing with one event
    assert monitor.firing["mean_log_likelihood"] is True
    assert [e["test"] for e in monitor.events].count("mean_log_likelihood") == 1
    # When it comes back past half the threshold (z = -2.5), it clears; a new crossing re-fires
    monitor.statistics = with_z(-2.5)  # type: ignore[method-assign]
    monitor.evaluate(None, now=10.0)
    assert monitor.firing["mean_log_likelihood"] is False
    monitor.statistics = with_z(-6.5)  # type: ignore[method-assign]
    monitor.evaluate(None, now=11.0)
    assert [e["test"] for e in monitor.events].count("mean_log_likelihood") == 2


def test_the_events_kept_in_memory_are_bounded_and_new_ones_are_found(big_bundle) -> None:
    monitor, real = monitor_on_normal_data(big_bundle, seed=44)
    # Given a test that fires and clears again and again, for months
    for t in range(2 * RECENT_DRIFT_EVENTS + 10):
        z = -7.0 if t % 2 == 0 else 0.0
        monitor.statistics = lambda z=z: {**real, "mean_log_likelihood_z": z}  # type: ignore[method-assign]
        monitor.evaluate(None, now=float(t + 1))
    # Then every rising edge is counted, but only the latest events are kept
    assert monitor.raised == RECENT_DRIFT_EVENTS + 5
    assert len(monitor.events) == RECENT_DRIFT_EVENTS
    # And a reader that saw all but the last three gets exactly those three
    assert monitor.events_since(monitor.raised - 3) == list(monitor.events)[-3:]
    assert monitor.events_since(monitor.raised) == []
