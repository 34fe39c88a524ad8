"""Shared synthetic data and trained bundles for the unit tests (no files from ../shared)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from detector.model.bundle import ModelBundle
from detector.model.train import train
from detector.settings import Settings, load_settings

FEATURES = ("a", "b", "c", "d")
# Three well separated clusters in 4-D: BIC must find exactly three components.
MEANS = np.array([[0.0, 0.0, 0.0, 0.0], [8.0, 8.0, 0.0, 0.0], [0.0, 8.0, 8.0, -8.0]])
COV = np.array(
    [[1.0, 0.6, 0.0, 0.0], [0.6, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -0.3], [0.0, 0.0, -0.3, 1.0]]
)


def mixture_sample(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, n)
    return MEANS[z] + rng.multivariate_normal(np.zeros(4), COV, n)


def as_rows(x: np.ndarray, names: tuple[str, ...] = FEATURES) -> list[dict[str, Any]]:
    return [dict(zip(names, r, strict=True)) for r in x.tolist()]


def small_settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"model": {"n_components_max": 4}, "training": {"n_jobs": 1}}
    for k, v in overrides.items():
        base.setdefault(k, {}).update(v)
    return load_settings(overrides=base, environ={})


@pytest.fixture(scope="session")
def big_bundle() -> ModelBundle:
    """Trained on 100,000 rows: enough calibration rows to pin the 1% quantile."""
    return train(
        as_rows(mixture_sample(100_000, seed=1)),
        small_settings(model={"covariance_types": ["full", "diag"]}),
    )


@pytest.fixture(scope="session")
def small_bundle() -> ModelBundle:
    return train(as_rows(mixture_sample(5_000, seed=2)), small_settings())


@pytest.fixture(scope="session")
def categorical_bundle() -> ModelBundle:
    rng = np.random.default_rng(3)
    x = mixture_sample(4_000, seed=3)
    kinds = np.array(["pump", "fan", "valve"])[rng.integers(0, 3, len(x))]
    rows = [dict(r, kind=str(k)) for r, k in zip(as_rows(x), kinds, strict=True)]
    return train(rows, small_settings())
