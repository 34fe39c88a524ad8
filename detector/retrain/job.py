"""The retraining job: samples window -> robust fit -> validation gate -> publish.

1. Read the most recent window from the samples topic, bounded by count and by event age
   measured from the newest sample's event time, not the clock (``detector.retrain.window``).
2. Refuse windows unfit to learn from: too few rows, more than ``max_alerted_fraction``
   alerted under the model of the day (a fault, not an operating point; the tighter
   ``max_alerted_fraction_one_series`` when one entity holds the window), or a constant
   feature. The current model stays.
3. Split by event time: the newest ``holdout_fraction`` validates, the rest trains; the
   alerted rows of a machine alerting far more than the others are in neither
   (``detector.retrain.faulty``: its lasting fault must not become normal).
4. Fit with the same code as ``detector train`` (BIC grid, calibration split,
   thresholds), then trim: rows whose log-likelihood under that first fit falls below
   Tukey's far-out fence (Q1 - 3 IQR of the log-likelihoods) are taken as anomalies
   and the chosen (K, covariance) is refit without them, so the anomalies in the window
   do not become "normal" and do not drag the thresholds down.
5. Gate: on the holdout (inside the same fence) the candidate's warning alert rate must be
   within tolerance of the target (at least 3 standard errors of the difference between
   the holdout's rate, over its effective number of rows since sensor series are
   autocorrelated (``design_effect``), and the threshold's own, read from the candidate's
   calibration rows), and its mean log-likelihood (in feature units, so
   models with different scalers compare) may trail the current model's by at most
   ``max_worse_margin``. A candidate that fails is published as rejected, with the reason.

Two retrainers at once: a non-blocking lock on the registry makes the second one stop
with outcome ``busy``; publishing is atomic, so a crash leaves CURRENT untouched.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DetectorError, RegistryError, RetrainRefused
from detector.metrics import RetrainMetrics
from detector.model.bundle import ModelBundle
from detector.model.scorer import Scorer
from detector.model.train import train
from detector.registry.store import ModelRegistry
from detector.registry.topic import open_registry
from detector.retrain.faulty import faulty_entities, one_series_window, usual_value, without_faults
from detector.retrain.window import SampleRow, read_window
from detector.settings import Settings

log = logging.getLogger(__name__)

# Tukey's "far out" fence: for Gaussian data it trims well under 1% of normal rows, while
# an event several standard deviations out on any feature falls far beyond it.
TUKEY_FAR_OUT = 3.0
# The gate's alert-rate check is never tighter than this many standard errors of the
# holdout's alert rate (binomial, widened by the holdout's design effect).
RATE_CHECK_SIGMAS = 3.0
# The lag-1 autocorrelation taken into the design effect is capped here: (1 + 0.9) / (1 -
# 0.9) = 19, a series whose neighbouring rows are that alike still says something.
MAX_LAG1_AUTOCORRELATION = 0.9
# Fewer consecutive same-entity pairs than this estimate no autocorrelation (deff 1).
MIN_PAIRS = 10


@dataclass
class RetrainOutcome:
    outcome: str  # promoted | rejected | refused | failed | busy
    version: str | None = None
    reason: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "version": self.version,
            "reason": self.reason,
            "figures": self.figures,
        }


def tukey_fence(log_likelihood: np.ndarray) -> float:
    q1, q3 = np.percentile(log_likelihood, [25, 75])
    return float(q1 - TUKEY_FAR_OUT * (q3 - q1))


def check_window(
    rows: list[SampleRow],
    settings: Settings,
    feature_names: tuple[str, ...],
    current: ModelBundle | None = None,
) -> None:
    """Raise ``RetrainRefused`` when the window is unfit to learn from."""
    cfg = settings.retrain
    if len(rows) < cfg.min_samples:
        raise RetrainRefused(
            "too_few_samples",
            f"{len(rows)} samples in the window, retrain.min_samples is {cfg.min_samples}",
        )
    alerted = sum(r.alerted for r in rows) / len(rows)
    # One series has no others to tell its fault from a change of operating point
    # (detector.retrain.faulty does that for a fleet): a tighter limit, never a looser one.
    one_series = one_series_window(rows)
    limit, knob = cfg.max_alerted_fraction, "max_alerted_fraction"
    if one_series and cfg.max_alerted_fraction_one_series < limit:
        limit, knob = cfg.max_alerted_fraction_one_series, "max_alerted_fraction_one_series"
    if alerted > limit:
        raise RetrainRefused(
            "mostly_anomalies",
            f"{100 * alerted:.1f}% of the window alerted (retrain.{knob} {100 * limit:.0f}%"
            f"{', the window is one series' if one_series else ''}): that is a fault to "
            "fix, not a state to learn",
        )
    for name in feature_names:
        col = np.array(
            [r.values.get(name) for r in rows if isinstance(r.values.get(name), int | float)],
            dtype=float,
        )
        if col.size and np.ptp(col) == 0.0:
            if current is not None and usual_value(current, name, float(col[0])):
                continue  # the value it (nearly) always had: a counter at 0, not a stuck sensor
            raise RetrainRefused(
                "constant_feature",
                f"feature {name!r} is constant ({col[0]:g}) across the window: a stuck sensor?",
            )


def in_feature_units(bundle: ModelBundle, log_likelihood: np.ndarray) -> np.ndarray:
    """Log-likelihoods in the features' own units (the scaler's Jacobian added back).

    Scores in standardized units are not comparable between models whose scalers
    differ; the density of the unscaled features is.
    """
    return log_likelihood - float(np.sum(np.log(bundle.scaler.scale_)))


def fit_robust(rows: list[dict[str, Any]], settings: Settings) -> tuple[ModelBundle, float, int]:
    """Train, trim rows beyond the fence under that fit, refit the chosen model on the rest."""
    first = train(rows, settings)
    ll = Scorer(first, settings.features).score(rows).log_likelihood
    ok = np.isfinite(ll)
    fence = tukey_fence(ll[ok])
    keep = ok & (ll >= fence)
    chosen = first.summary["chosen"]
    pinned = settings.model_copy(
        update={
            "model": settings.model.model_copy(
                update={
                    "n_components_min": chosen["n_components"],
                    "n_components_max": chosen["n_components"],
                    "covariance_types": [chosen["covariance_type"]],
                }
            )
        }
    )
    kept = [rows[i] for i in np.flatnonzero(keep)]
    final = train(kept, pinned, spec=first.spec)
    final.summary["grid"] = first.summary["grid"]  # the search that chose the model
    final.summary["trimmed_rows"] = int((~keep).sum())
    final.summary["trim_fence_log_likelihood"] = fence
    return final, fence, int((~keep).sum())


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
            figures["current_alert_rate"] = float((cur.severity > 0).mean()) if kept else None
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
    cur_mean = figures.get("current_mean_log_likelihood")
    if cur_mean is not None and cand_mean < cur_mean - cfg.max_worse_margin:
        return (
            False,
            f"candidate mean log-likelihood {cand_mean:.3f} on the holdout trails the current "
            f"model's {cur_mean:.3f} by more than retrain.max_worse_margin = {cfg.max_worse_margin}",
            figures,
        )
    return True, None, figures


@contextmanager
def retrain_lock(root: Path) -> Iterator[bool]:
    """Non-blocking: yields False when another retrainer holds the registry."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".retrain.lock").open("a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def retrain_once(
    settings: Settings,
    *,
    registry: ModelRegistry | None = None,
    metrics: RetrainMetrics | None = None,
    window: list[SampleRow] | None = None,
    now_ms: float | None = None,
) -> RetrainOutcome:
    """One run of the job; never raises for an expected outcome.

    ``window``: rows to use instead of reading the samples topic (taken as they are).
    ``now_ms``: the clock (default: the wall clock), only to tell future-dated stamps.
    """
    registry = registry or open_registry(settings.registry, settings.kafka)
    metrics = metrics or RetrainMetrics()
    started = time.perf_counter()
    with retrain_lock(registry.root) as acquired:
        if not acquired:
            outcome = RetrainOutcome("busy", reason="another retrain holds the registry lock")
        else:
            outcome = _run(settings, registry, window, now_ms)
    took = time.perf_counter() - started
    outcome.figures["duration_s"] = took
    metrics.runs.labels(outcome.outcome).inc()
    metrics.duration.set(took)
    if outcome.outcome == "refused" and outcome.figures.get("refusal"):
        metrics.refusals.labels(outcome.figures["refusal"]).inc()
    for k, v in outcome.figures.get("validation", {}).items():
        if isinstance(v, int | float) and np.isfinite(v):
            metrics.validation.labels(k).set(v)
    if "window_rows" in outcome.figures:
        metrics.window_size.set(outcome.figures["window_rows"])
    log.info("retrain %s%s", outcome.outcome, f": {outcome.reason}" if outcome.reason else "")
    return outcome


def _run(
    settings: Settings,
    registry: ModelRegistry,
    window: list[SampleRow] | None,
    now_ms: float | None,
) -> RetrainOutcome:
    try:
        current = registry.load() if registry.current() else None
    except (RegistryError, DetectorError) as exc:
        log.warning("current model not loadable (%s); validating without comparison", exc)
        current = None
    figures: dict[str, Any] = {}
    if window is None:
        aged = read_window(settings, now_ms)
        rows = aged.rows
        figures["window_newest_event_time_ms"] = aged.newest_ms
        figures["window_too_old_rows"] = aged.too_old
        figures["window_future_dated_rows"] = aged.future_dated
    else:
        rows = window
    figures["window_rows"] = len(rows)
    features = settings.features
    if current is not None:
        # Keep the feature set of the model in service (its temporal plan too, which
        # training may have chosen itself); categories are learned afresh.
        spec = current.spec
        features = features.model_copy(
            update={
                "numeric": list(spec.numeric),
                "categorical": list(spec.categorical),
                "temporal": dict(spec.temporal),
                "temporal_forms": list(spec.temporal_forms),
                "temporal_halflife_events": spec.temporal_halflife_events,
                "temporal_raw": all(f in spec.numeric for f in spec.temporal),
                "temporal_auto": False,
            }
        )
    run_settings = settings.model_copy(update={"features": features})
    names = tuple(current.spec.features if current is not None else rows[0].values if rows else ())
    try:
        check_window(rows, run_settings, names, current)
    except RetrainRefused as exc:
        figures["refusal"] = exc.reason
        left_out = [
            f"{figures[key]} {what}"
            for key, what in (
                ("window_too_old_rows", "older than retrain.window_max_age_s before the newest"),
                ("window_future_dated_rows", "future-dated"),
            )
            if figures.get(key)
        ]
        message = str(exc) + (f" ({', '.join(left_out)} left out)" if left_out else "")
        return RetrainOutcome("refused", reason=message, figures=figures)
    n_hold = max(1, round(len(rows) * settings.retrain.holdout_fraction))
    figures["alerted_fraction"] = sum(r.alerted for r in rows) / len(rows)
    faulty = faulty_entities(rows)
    figures["faulty_entities"] = sorted(faulty)
    fit_part, hold_part = (
        without_faults(rows[:-n_hold], faulty),
        without_faults(rows[-n_hold:], faulty),
    )
    figures["faulty_rows_left_out"] = len(rows) - len(fit_part) - len(hold_part)
    fit_rows = [r.values for r in fit_part]
    holdout = [r.values for r in hold_part]
    try:
        candidate, _, trimmed = fit_robust(fit_rows, run_settings)
    except DetectorError as exc:
        return RetrainOutcome("failed", reason=f"training failed: {exc}", figures=figures)
    figures["trimmed_rows"] = trimmed
    entities = [r.entity for r in hold_part]
    ok, reason, validation = validate(candidate, current, holdout, run_settings, entities)
    figures["validation"] = validation
    candidate.summary["validation"] = {"passed": ok, "reason": reason, **validation}
    candidate.summary["retrain"] = {k: v for k, v in figures.items() if k != "validation"}
    if not ok:
        version = registry.publish(candidate, promote=False, rejected_reason=reason)
        return RetrainOutcome("rejected", version=version, reason=reason, figures=figures)
    version = registry.publish(candidate, promote=True)
    return RetrainOutcome("promoted", version=version, figures=figures)
