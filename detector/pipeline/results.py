"""Score results of the record-by-record retry: one placeholder per failed row, stitched."""

from __future__ import annotations

import numpy as np

from detector.model.scorer import Scorer, ScoreResult
from detector.pipeline.reasons import Reason


def failed_row(scorer: Scorer, message: str) -> ScoreResult:
    return ScoreResult(
        log_likelihood=np.full(1, np.nan),
        percentile=np.full(1, np.nan),
        severity=np.zeros(1, dtype=np.int8),
        threshold=np.full(1, np.nan),
        severity_names=scorer.thresholds.names,
        errors={0: (Reason.INTERNAL_ERROR, message)},
        unknown_categories=np.zeros(1, dtype=np.int64),
        feature_missing=np.zeros((1, len(scorer.spec.features)), dtype=bool),
        encoded=np.full((1, scorer.encoder.n_columns), np.nan),
    )


def concat_results(parts: list[ScoreResult], scorer: Scorer) -> ScoreResult:
    """Per-row results of the retry, as one result aligned with the batch."""
    if not parts:
        return empty_result(scorer)
    out = ScoreResult(
        log_likelihood=np.concatenate([p.log_likelihood for p in parts]),
        percentile=np.concatenate([p.percentile for p in parts]),
        severity=np.concatenate([p.severity for p in parts]),
        threshold=np.concatenate([p.threshold for p in parts]),
        severity_names=scorer.thresholds.names,
        errors={},
        unknown_categories=np.concatenate([p.unknown_categories for p in parts]),
        feature_missing=np.concatenate([p.feature_missing for p in parts]),
        encoded=np.concatenate([p.encoded for p in parts]),
    )
    offset = 0
    for p in parts:
        out.errors.update({offset + i: e for i, e in p.errors.items()})
        out.top_features.update({offset + i: t for i, t in p.top_features.items()})
        out.mahalanobis_sq.update({offset + i: m for i, m in p.mahalanobis_sq.items()})
        offset += p.log_likelihood.shape[0]
    return out


def empty_result(scorer: Scorer) -> ScoreResult:
    return ScoreResult(
        log_likelihood=np.empty(0),
        percentile=np.empty(0),
        severity=np.empty(0, dtype=np.int8),
        threshold=np.empty(0),
        severity_names=scorer.thresholds.names,
        errors={},
        unknown_categories=np.empty(0, dtype=np.int64),
        feature_missing=np.empty((0, len(scorer.spec.features)), dtype=bool),
        encoded=np.empty((0, scorer.encoder.n_columns)),
    )
