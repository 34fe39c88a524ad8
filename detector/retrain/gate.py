"""The retraining gate: is a candidate fit to replace the model in service?

On the holdout (inside the candidate's trim fence) the candidate's warning alert rate must
be within tolerance of the target (at least ``RATE_CHECK_SIGMAS`` standard errors of the
difference between the holdout's rate, over its effective number of rows since sensor
series are autocorrelated (``design_effect``), and the threshold's own, read from the
candidate's calibration rows). While the current model itself still holds the target on
that holdout, the candidate must hold it at least as closely: a retrain replaces a
calibrated model only by one as good, not by one whose threshold drew a worse calibration
sample.
And its mean log-likelihood (in feature units, so models with different scalers compare)
may trail the current model's by at most ``retrain.max_worse_margin``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.errors import DetectorError
from detector.model.bundle import ModelBundle
from detector.model.scorer import Scorer
from detector.settings import Settings

# The gate's alert-rate check is never tighter than this many standard errors of the
# holdout's alert rate (binomial, widened by the holdout's design effect).
RATE_CHECK_SIGMAS = 3.0
# The lag-1 autocorrelation taken into the design effect is capped here: (1 + 0.9) / (1 -
# 0.9) = 19, a series whose neighbouring rows are that alike still says something.
MAX_LAG1_AUTOCORRELATION = 0.9
# Fewer consecutive same-entity pairs than this estimate no autocorrelation (deff 1).
MIN_PAIRS = 10


def in_feature_units(bundle: ModelBundle, log_likelihood: np.ndarray) -> np.ndarray:
    """Log-likelihoods in the features' own units (the scaler's Jacobian added back).

    Scores in standardized units are not comparable between models whose scalers
    differ; the density of the unscaled features is.
    """
    return log_likelihood - float(np.sum(np.log(bundle.scaler.scale_)))


def design_effect(log_likelihood: np.ndarray, entities: list[str | None] | None) -> float:
    """How many rows of this series carry the evidence of one independent row.

    Sensor readings are autocorrelated: a pump's neighbouring readings, and so their
    verdicts, are alike, and the variance of an alert rate over n such rows is that of
    n / deff independent ones, deff = (1 + rho) / (1 - rho) for the lag-1 autocorrelation
    rho of each entity's consecutive log-likelihoods (rows in event-time order; no
    entities: one series). Pooled over entities, clipped to [0, MAX_LAG1_AUTOCORRELATION].
    """
    ll = np.asarray(log_likelihood, dtype=float)
    if ll.size < 3:
        return 1.0
    keys = np.array(["" if e is None else e for e in entities]) if entities else np.zeros(ll.size)
    _, k = np.unique(keys, return_inverse=True)
    order = np.argsort(k, kind="stable")  # each entity's rows together, in time order
    x, k = ll[order], k[order]
    # Centred on each entity's own mean: the holdout's entities are the ones the thresholds
    # were calibrated on, so an entity's level is no extra noise; its persistence is.
    centred = x - (np.bincount(k, weights=x) / np.bincount(k))[k]
    same = k[1:] == k[:-1]
    denominator = float(np.sum(centred**2))
    if same.sum() < MIN_PAIRS or denominator == 0.0:
        return 1.0
    rho = float(np.sum(centred[1:][same] * centred[:-1][same])) / denominator
    rho *= ll.size / max(int(same.sum()), 1)  # per pair, not per row
    rho = min(max(rho, 0.0), MAX_LAG1_AUTOCORRELATION)
    return (1.0 + rho) / (1.0 - rho)


def validate(
    candidate: ModelBundle,
    current: ModelBundle | None,
    holdout: list[dict[str, Any]],
    settings: Settings,
    entities: list[str | None] | None = None,
) -> tuple[bool, str | None, dict[str, Any]]:
    """The gate: alert rate near target on presumed-normal holdout rows, and not worse.

    ``entities``: each holdout row's entity (event-time order), for the design effect.
    """
    cfg = settings.retrain
    cand = Scorer(candidate, settings.features)
    res = cand.score(holdout)
    fence = float(candidate.summary.get("trim_fence_log_likelihood", -np.inf))
    inside = np.isfinite(res.log_likelihood) & (res.log_likelihood >= fence)
    n = int(inside.sum())
    target = candidate.thresholds.alert_rate
    rate = float((res.severity[inside] > 0).mean()) if n else float("nan")
    deff = design_effect(
        res.log_likelihood[inside],
        [entities[i] for i in np.flatnonzero(inside)] if entities else None,
    )
    # Two samples stand between the target and the holdout's rate: the calibration rows the
    # threshold was read from (its true alert rate is itself uncertain) and the holdout.
    n_cal = int(candidate.summary.get("rows", {}).get("calibration", 0))
    variance = target * (1 - target) * (deff / max(n, 1) + (1 / n_cal if n_cal else 0.0))
    allowed = max(cfg.alert_rate_tolerance * target, RATE_CHECK_SIGMAS * float(np.sqrt(variance)))
    figures: dict[str, Any] = {
        "holdout_rows": len(holdout),
        "holdout_rows_inside_fence": n,
        "holdout_design_effect": deff,
        "calibration_rows": n_cal,
        "target_alert_rate": target,
        "candidate_alert_rate": rate,
        "allowed_deviation": allowed,
    }
    kept = [holdout[i] for i in np.flatnonzero(inside)]
    cand_ll = in_feature_units(candidate, res.log_likelihood[inside])
    cand_mean = float(np.mean(cand_ll)) if kept else float("nan")
    figures["candidate_mean_log_likelihood"] = cand_mean
    if current is not None:
        try:
            cur = Scorer(current, settings.features).score(kept)
            cur_ll = in_feature_units(current, cur.log_likelihood)
            cur_ll = cur_ll[np.isfinite(cur_ll)]
            figures["current_version"] = current.version
            figures["current_mean_log_likelihood"] = float(cur_ll.mean()) if cur_ll.size else None
            scored = np.isfinite(cur.log_likelihood)  # the rows its rate can speak for
            figures["current_alert_rate"] = (
                float((cur.severity[scored] > 0).mean()) if scored.any() else None
            )
        except DetectorError as exc:
            figures["current_comparison_skipped"] = str(exc)
    if n == 0:
        return False, "no holdout rows to validate on", figures
    if abs(rate - target) > allowed:
        return (
            False,
            f"candidate alert rate {100 * rate:.2f}% on the holdout is outside target "
            f"{100 * target:.2f}% +- {100 * allowed:.2f}%",
            figures,
        )
    cur_rate = figures.get("current_alert_rate")
    if (
        cur_rate is not None
        and abs(rate - target) > abs(cur_rate - target)
        and abs(cur_rate - target) <= allowed
    ):
        # The model in service still holds the target here: only a candidate at least as
        # close replaces it (a tie keeps the model in service: nothing to gain by a swap).
        return (
            False,
            f"candidate alert rate {100 * rate:.2f}% on the holdout is further from target than the current model's {100 * cur_rate:.2f}%, which holds it",
            figures,
        )
    cur_mean = figures.get("current_mean_log_likelihood")
    if cur_mean is not None and cand_mean < cur_mean - cfg.max_worse_margin:
        return (
            False,
            f"candidate mean log-likelihood {cand_mean:.3f} on the holdout trails the current "
            f"model's {cur_mean:.3f} by more than retrain.max_worse_margin = {cfg.max_worse_margin}",
            figures,
        )
    return True, None, figures
