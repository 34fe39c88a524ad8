"""Detection quality on labelled data: AUROC, AUPRC, alert rate on normals, recall.

Used by ``detector evaluate`` and ``make bench-quality``; both score through the
``Scorer`` like the service does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from detector.model.scorer import ScoreResult


def quality(result: ScoreResult, labels: np.ndarray) -> dict[str, Any]:
    """Figures for rows that could be scored; invalid rows are counted, not guessed."""
    labels = np.asarray(labels).astype(bool)
    scored = np.isfinite(result.log_likelihood)
    y = labels[scored]
    score = -result.log_likelihood[scored]
    sev = result.severity[scored]
    out: dict[str, Any] = {
        "rows": int(labels.size),
        "scored": int(scored.sum()),
        "unscored_invalid": int((~scored).sum()),
        "normal": int((~y).sum()),
        "anomalous": int(y.sum()),
    }
    if y.any() and (~y).any():
        out["auroc"] = float(roc_auc_score(y, score))
        out["auprc"] = float(average_precision_score(y, score))
    else:
        out["auroc"] = out["auprc"] = None
    per: dict[str, Any] = {}
    for level, name in enumerate(result.severity_names, start=1):
        flagged = sev >= level  # a critical alert is also over the warning threshold
        per[name] = {
            "alert_rate_normal": float(flagged[~y].mean()) if (~y).any() else None,
            "recall_anomalous": float(flagged[y].mean()) if y.any() else None,
            "precision": float(y[flagged].mean()) if flagged.any() else None,
        }
    out["per_severity"] = per
    return out
