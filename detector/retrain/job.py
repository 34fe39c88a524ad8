"""The retraining job: samples window -> robust fit -> validation gate -> publish.

1. Read the most recent window from the samples topic, bounded by count and by event age
   measured from the newest sample's event time, not the clock (``detector.retrain.window``).
2. Refuse windows unfit to learn from: too few rows, more than ``max_alerted_fraction``
   alerted under the model of the day (a fault, not an operating point; the tighter
   ``max_alerted_fraction_one_series`` when one entity holds the window), or a constant
   feature. The current model stays.
3. Split by event time: the newest ``holdout_fraction`` validates, the rest trains; the
   alerted rows of a machine alerting far more than the others, and a run of one machine's
   alerts the fleet does not share, are in neither (``detector.retrain.faulty``: a
   machine's fault, lasting or short, must not become normal).
4. Fit with the same code as ``detector train`` (BIC grid, calibration split,
   thresholds), then trim: rows whose log-likelihood under that first fit falls below
   Tukey's far-out fence (Q1 - 3 IQR of the log-likelihoods) are taken as anomalies
   and the chosen (K, covariance) is refit without them, so the anomalies in the window
   do not become "normal" and do not drag the thresholds down.
5. Gate (``detector.retrain.gate``): on the holdout the candidate's alert rate must be near
   the target (and, while the current model holds the target there, nearer than its), and
   its log-likelihood may trail the current model's by at most ``max_worse_margin``. A
   candidate that fails is published as rejected, with the reason.

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
from detector.retrain.faulty import faulty_entities, learnable, one_series_window, usual_value
from detector.retrain.gate import validate
from detector.retrain.window import SampleRow, read_window
from detector.settings import Settings

log = logging.getLogger(__name__)

# Tukey's "far out" fence: for Gaussian data it trims well under 1% of normal rows, while
# an event several standard deviations out on any feature falls far beyond it.
TUKEY_FAR_OUT = 3.0


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
                "temporal_peer": spec.temporal_peer,
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
    keep = learnable(rows, faulty)  # nor one machine's short fault (detector.retrain.faulty)
    fit_part = [r for r, k in zip(rows[:-n_hold], keep, strict=False) if k]
    hold_part = [r for r, k in zip(rows[-n_hold:], keep[-n_hold:], strict=True) if k]
    figures["faulty_rows_left_out"] = keep.count(False)
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
