"""The one scoring path: the service, the CLI, the benchmark and the evaluation call this.

A batch of rows -> encode -> scale -> log-likelihood -> percentile and severity -> for the
rows that alert, the features that drove it. One vectorized call per stage per batch;
rows with missing features are grouped by which features are present and scored with the
exact marginal mixture over those, against thresholds calibrated on the calibration rows
marginalized the same way (computed on first need, cached per pattern).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.features.encoder import EncodedBatch, FeatureEncoder
from detector.model.bundle import ModelBundle
from detector.model.mixture import Mixture
from detector.model.thresholds import Thresholds
from detector.settings import FeatureSettings, ThresholdSettings

# An overflowing score (a reading of 1e300) is still the most anomalous event of the
# batch: floor it to a finite value so it sorts, serializes and alerts as critical.
LOG_LIKELIHOOD_FLOOR = float(np.finfo(np.float64).min)
# Distinct missing-value patterns whose marginal calibration is kept in memory.
MAX_CACHED_PATTERNS = 1024


@dataclass(frozen=True)
class Contribution:
    feature: str
    contribution: float  # term of the squared Mahalanobis distance
    value: Any  # the value as the event carried it


@dataclass
class ScoreResult:
    """Per-row results, aligned with the input rows. Invalid rows have NaN scores."""

    log_likelihood: np.ndarray
    percentile: np.ndarray
    severity: np.ndarray  # 0 = none, i = severity_names[i - 1]
    threshold: np.ndarray  # log-likelihood threshold of the severity crossed (NaN if none)
    severity_names: tuple[str, ...]
    errors: dict[int, tuple[str, str]]
    unknown_categories: np.ndarray
    feature_missing: np.ndarray  # (n, n_features) bool
    encoded: np.ndarray  # (n, columns) the rows as the model sees them before scaling
    top_features: dict[int, list[Contribution]] = field(default_factory=dict)
    mahalanobis_sq: dict[int, float] = field(default_factory=dict)

    @property
    def anomaly_score(self) -> np.ndarray:
        return -self.log_likelihood

    @property
    def alerting(self) -> np.ndarray:
        return np.flatnonzero(self.severity > 0)

    def severity_name(self, i: int) -> str:
        s = int(self.severity[i])
        return self.severity_names[s - 1] if s else "none"


class Scorer:
    """Scores batches with one model bundle. Cheap to share; build once per version."""

    def __init__(
        self,
        bundle: ModelBundle,
        features: FeatureSettings | None = None,
        thresholds: ThresholdSettings | None = None,
    ) -> None:
        self.bundle = bundle
        self.version = bundle.version
        self.spec = bundle.spec
        self._features = bundle.spec.features
        self.encoder = FeatureEncoder(bundle.spec, features or FeatureSettings())
        self.impute = self.encoder.missing_policy == "impute"
        self.top_k = (thresholds or ThresholdSettings()).top_features
        self.mixture = Mixture.from_sklearn(bundle.mixture)
        self._mean = np.asarray(bundle.scaler.mean_, dtype=np.float64)
        self._scale_by = np.asarray(bundle.scaler.scale_, dtype=np.float64)
        self.thresholds = bundle.thresholds
        self._levels = dict(
            zip(bundle.thresholds.names, bundle.thresholds.percentiles, strict=True)
        )
        owner = np.asarray(bundle.spec.column_feature)
        # (columns x features) 0/1: sums a categorical's one-hot terms into its feature.
        self._to_feature = (owner[:, None] == np.arange(len(bundle.spec.features))[None, :]).astype(
            np.float64
        )
        self._patterns: OrderedDict[bytes, tuple[Mixture, Thresholds]] = OrderedDict()

    # -- public entry points -------------------------------------------------------------
    def score(self, rows: Sequence[Mapping[str, Any]]) -> ScoreResult:
        """Score value mappings (feature name -> number or category)."""
        return self.score_encoded(self.encoder.encode(rows), rows)

    def score_encoded(
        self, batch: EncodedBatch, rows: Sequence[Mapping[str, Any]] | None = None
    ) -> ScoreResult:
        n = batch.matrix.shape[0]
        n_levels = len(self.thresholds.names)
        ll = np.full(n, np.nan)
        pct = np.full(n, np.nan)
        thr = np.full((n, n_levels), np.nan)
        errors = batch.errors
        x = self._scale(batch.matrix)  # NaN (missing) passes through
        overflow = np.isinf(x).any(axis=1)
        if overflow.any():
            # A finite reading that is infinite once standardized (-1e308 over a scale below
            # 1): no density exists for it and sklearn would refuse the whole batch.
            errors = dict(errors)
            for i in np.flatnonzero(overflow):
                j = int(np.flatnonzero(np.isinf(x[i]))[0])
                errors.setdefault(
                    int(i), ("bad_value", self._overflow_message(batch.matrix, int(i), j))
                )
        valid = np.ones(n, dtype=bool)
        if errors:
            valid[list(errors)] = False
        gaps = np.isnan(x)
        if self.impute:
            x[gaps] = 0.0  # the training mean, in standardized units
            gaps[:] = False
        incomplete = gaps.any(axis=1)

        complete = np.flatnonzero(valid & ~incomplete)
        if complete.size:
            with np.errstate(over="ignore", invalid="ignore"):
                ll[complete] = self.bundle.mixture.score_samples(x[complete])
            pct[complete] = self.thresholds.percentile_of(ll[complete])
            thr[complete] = self.thresholds.log_likelihood

        partial = np.flatnonzero(valid & incomplete)
        if partial.size:
            patterns, inverse = np.unique(gaps[partial], axis=0, return_inverse=True)
            for p, pattern in enumerate(patterns):
                rows_p = partial[inverse.ravel() == p]
                present = np.flatnonzero(~pattern)
                mixture, thresholds = self._marginal(present)
                with np.errstate(over="ignore", invalid="ignore"):
                    ll[rows_p] = mixture.log_likelihood(x[np.ix_(rows_p, present)])
                pct[rows_p] = thresholds.percentile_of(ll[rows_p])
                thr[rows_p] = thresholds.log_likelihood

        scored = np.flatnonzero(valid)
        ll[scored] = np.nan_to_num(
            ll[scored], nan=LOG_LIKELIHOOD_FLOOR, neginf=LOG_LIKELIHOOD_FLOOR
        )
        severity = np.zeros(n, dtype=np.int8)
        for level in range(n_levels):
            severity[scored[ll[scored] < thr[scored, level]]] = level + 1
        crossed = np.full(n, np.nan)
        alerting = np.flatnonzero(severity > 0)
        crossed[alerting] = thr[alerting, severity[alerting] - 1]

        result = ScoreResult(
            log_likelihood=ll,
            percentile=pct,
            severity=severity,
            threshold=crossed,
            severity_names=self.thresholds.names,
            errors=errors,
            unknown_categories=batch.unknown_categories,
            feature_missing=batch.feature_missing,
            encoded=batch.matrix,
        )
        if alerting.size:
            self._explain(result, alerting, x, gaps, batch.matrix, rows)
        return result

    def explain(self, rows: Sequence[Mapping[str, Any]]) -> ScoreResult:
        """Score and explain every valid row, alerting or not (for reports)."""
        batch = self.encoder.encode(rows)
        result = self.score_encoded(batch, rows)
        x = self._scale(batch.matrix)
        gaps = np.isnan(x)
        scored = np.flatnonzero(np.isfinite(result.log_likelihood))  # rows overflowing are not
        self._explain(result, scored, x, gaps, batch.matrix, rows)
        return result

    # -- internals -----------------------------------------------------------------------
    def _overflow_message(self, matrix: np.ndarray, i: int, column: int) -> str:
        name = self._features[self.spec.column_feature[column]]
        return (
            f"{name} = {matrix[i, column]:.6g}: overflows once standardized "
            f"(scale {self._scale_by[column]:.3g}); not a value this model can score"
        )

    def _scale(self, matrix: np.ndarray) -> np.ndarray:
        """The persisted StandardScaler's transform, row-wise tolerant.

        Same arithmetic as ``StandardScaler.transform``; done here because sklearn checks
        the whole batch for infinities and would refuse 999 good rows for one bad one
        (which is already an error row), and NaN (missing) must pass through.
        """
        with np.errstate(invalid="ignore", over="ignore"):
            return (matrix - self._mean) / self._scale_by

    def _marginal(self, present: np.ndarray) -> tuple[Mixture, Thresholds]:
        key = present.tobytes()
        hit = self._patterns.get(key)
        if hit is not None:
            self._patterns.move_to_end(key)
            return hit
        mixture = self.mixture.marginal(present)
        cal = self.bundle.calibration_rows[:, present]
        thresholds = Thresholds.calibrate(mixture.log_likelihood(cal), self._levels)
        self._patterns[key] = (mixture, thresholds)
        if len(self._patterns) > MAX_CACHED_PATTERNS:
            self._patterns.popitem(last=False)
        return mixture, thresholds

    def _explain(
        self,
        result: ScoreResult,
        which: np.ndarray,
        x: np.ndarray,
        gaps: np.ndarray,
        raw: np.ndarray,
        rows: Sequence[Mapping[str, Any]] | None,
    ) -> None:
        features = self._features
        if not gaps[which].any():  # the usual case: one pattern, np.unique(axis=0) is slow
            groups: list[tuple[np.ndarray, np.ndarray]] = [(gaps[which[0]], which)]
        else:
            patterns, inverse = np.unique(gaps[which], axis=0, return_inverse=True)
            groups = [(pattern, which[inverse.ravel() == p]) for p, pattern in enumerate(patterns)]
        for pattern, idx in groups:
            present = np.flatnonzero(~pattern)
            mixture = self.mixture if present.size == x.shape[1] else self._marginal(present)[0]
            with np.errstate(over="ignore", invalid="ignore"):
                terms_present, _ = mixture.contributions(x[np.ix_(idx, present)])
            terms = np.zeros((idx.size, x.shape[1]))
            terms[:, present] = np.nan_to_num(terms_present, nan=0.0, posinf=1e300, neginf=-1e300)
            per_feature = terms @ self._to_feature
            top = np.argsort(-per_feature, axis=1)[:, : self.top_k]
            for r, i in enumerate(idx):
                i = int(i)
                result.mahalanobis_sq[i] = float(terms[r].sum())
                result.top_features[i] = [
                    Contribution(
                        features[f], float(per_feature[r, f]), self._value(rows, raw, i, int(f))
                    )
                    for f in top[r]
                ]

    def _value(
        self, rows: Sequence[Mapping[str, Any]] | None, raw: np.ndarray, i: int, f: int
    ) -> Any:
        name = self._features[f]
        if rows is not None:
            return rows[i].get(name)
        if f < len(self.spec.numeric):
            v = float(raw[i, f])
            return float(np.expm1(v)) if name in self.spec.log1p else v
        return None
