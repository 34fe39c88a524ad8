"""Severity thresholds: low percentiles of held-out normal log-likelihoods.

An event alerts at a severity when its log-likelihood is below that severity's threshold;
by construction about ``percentile`` % of normal events fall below it. The sorted
calibration scores are kept so any score maps to a percentile (its empirical p-value).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Kept this many calibration quantiles at most: 10,001 points resolve percentiles to 0.01
# while keeping the bundle small however many calibration rows there were.
MAX_STORED_SCORES = 10_001


@dataclass(frozen=True)
class Thresholds:
    """Severity names ordered from least to most severe, with their thresholds."""

    names: tuple[str, ...]
    percentiles: np.ndarray  # (L,) descending: 1.0 (warning), 0.1 (critical)
    log_likelihood: np.ndarray  # (L,) the thresholds, descending too
    sorted_scores: np.ndarray  # calibration log-likelihoods, ascending

    @classmethod
    def calibrate(cls, scores: np.ndarray, levels: Mapping[str, float]) -> Thresholds:
        ordered = sorted(levels.items(), key=lambda kv: -kv[1])
        pct = np.array([p for _, p in ordered], dtype=np.float64)
        clean = np.sort(scores[np.isfinite(scores)])
        # 'lower' so the threshold is an observed score: strict '<' then flags at most pct%.
        thr = (
            np.quantile(clean, pct / 100.0, method="lower")
            if clean.size
            else np.full(pct.shape, -np.inf)
        )
        if clean.size > MAX_STORED_SCORES:
            clean = np.quantile(clean, np.linspace(0.0, 1.0, MAX_STORED_SCORES))
        return cls(tuple(n for n, _ in ordered), pct, np.asarray(thr, dtype=np.float64), clean)

    @property
    def mildest(self) -> str:
        """The least severe severity (named in the bundle): an event alerts at all when it
        is below this one's threshold."""
        return self.names[0]

    @property
    def alert_rate(self) -> float:
        """Share (0-1) of normal events that alert at any severity: the mildest one's
        percentile, what the drift monitor, the retrain gate and the reports compare with."""
        return float(self.percentiles[0]) / 100.0

    def percentile_of(self, log_likelihood: np.ndarray) -> np.ndarray:
        """Share (in %) of normal calibration scores at or below each score."""
        if self.sorted_scores.size == 0:
            return np.full(log_likelihood.shape, np.nan)
        rank = np.searchsorted(self.sorted_scores, log_likelihood, side="right")
        return 100.0 * rank / self.sorted_scores.size

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {
            n: {"percentile": float(p), "log_likelihood": float(t)}
            for n, p, t in zip(self.names, self.percentiles, self.log_likelihood, strict=True)
        }
