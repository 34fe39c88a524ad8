"""The retraining job's refusals and its lock (the broker-backed runs are integration tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.registry.store import ModelRegistry
from detector.retrain.job import SampleRow, retrain_lock, retrain_once, tukey_fence
from tests.unit.conftest import as_rows, mixture_sample, small_settings


def window(x: np.ndarray, alerted: float = 0.0) -> list[SampleRow]:
    rows = as_rows(x)
    n_alerted = int(alerted * len(rows))
    return [
        SampleRow(r, "e", 1_795_000_000_000 + i, i < n_alerted, "v") for i, r in enumerate(rows)
    ]


def settings(tmp_path: Path):
    return small_settings(registry={"path": str(tmp_path)}, retrain={"min_samples": 1000})


def test_too_few_samples_is_refused_and_current_stays(tmp_path: Path, small_bundle) -> None:
    s = settings(tmp_path)
    current = ModelRegistry(s.registry).publish(small_bundle)
    out = retrain_once(s, window=window(mixture_sample(300, seed=1)))
    assert (out.outcome, out.figures["refusal"]) == ("refused", "too_few_samples")
    assert ModelRegistry(s.registry).current() == current


def test_a_window_of_mostly_alerts_is_refused(tmp_path: Path) -> None:
    out = retrain_once(settings(tmp_path), window=window(mixture_sample(2000, seed=2), alerted=0.8))
    assert (out.outcome, out.figures["refusal"]) == ("refused", "mostly_anomalies")
    assert "80.0% of the window alerted" in (out.reason or "")


def test_a_constant_feature_is_refused(tmp_path: Path) -> None:
    x = mixture_sample(2000, seed=3)
    x[:, 2] = 4.2
    out = retrain_once(settings(tmp_path), window=window(x))
    assert (out.outcome, out.figures["refusal"]) == ("refused", "constant_feature")
    assert "'c'" in (out.reason or "")


def test_a_second_retrainer_stands_aside_while_the_lock_is_held(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with retrain_lock(Path(s.registry.path)) as first:
        assert first
        out = retrain_once(s, window=window(mixture_sample(2000, seed=4)))
    assert out.outcome == "busy"
    assert retrain_once(s, window=window(mixture_sample(3000, seed=4))).outcome == "promoted"


def test_tukey_fence_trims_far_outliers_only() -> None:
    ll = np.random.default_rng(0).normal(0, 1, 10_000)
    fence = tukey_fence(np.concatenate([ll, [-50.0, -60.0]]))
    assert (ll < fence).mean() < 0.001 and fence > -50
