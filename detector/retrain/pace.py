"""Does the retraining loop keep pace with a stream? The sampling rate its event rate needs.

The retrainer fits on the samples of the last ``retrain.window_max_age_s`` of event time
(at most ``retrain.window_max_samples``), and refuses below ``retrain.min_samples``. A
stream of ``r`` events/s sampled at ``drift.sample_rate`` puts about
``sample_rate * r * window_max_age_s`` samples in that window (at most
``drift.max_samples_per_batch`` per batch; alerted rows are sampled too, flagged). At the
1% default a fleet of 5,000 events/s fills the 50,000-row window in under 20 minutes, but
a sensor reporting once a minute gives about 100 samples a week: retraining would never
fire. ``pace`` says which case a stream is in and the rate that fills the window within
its age; the backtest reports it, and the docs tell users to set ``drift.sample_rate``
from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from detector.settings import Settings


@dataclass(frozen=True)
class Pace:
    events_per_s: float
    samples_per_window: float  # expected at the configured drift.sample_rate
    sample_rate: float
    # The lowest rate reaching retrain.min_samples within the window's age, and the rate
    # that fills retrain.window_max_samples within it (both capped at 1).
    min_sample_rate: float
    filling_sample_rate: float
    min_samples_needed: float  # retrain.min_samples

    @property
    def retrains(self) -> bool:
        return self.samples_per_window >= self.min_samples_needed

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "retrains": self.retrains, "advice": self.advice()}

    def advice(self) -> str | None:
        """One line for the user when retraining cannot fire at this rate; None if it can."""
        if self.retrains:
            return None
        return (
            f"at {self.events_per_s:.3g} events/s, drift.sample_rate = {self.sample_rate:g} "
            f"puts about {self.samples_per_window:.0f} samples in a retrain window "
            f"(retrain.window_max_age_s, or the recording if shorter), under retrain.min_samples = "
            f"{self.min_samples_needed:.0f}: retraining never fires. Set drift.sample_rate "
            f">= {self.min_sample_rate:.3g} ({self.filling_sample_rate:.3g} fills "
            "retrain.window_max_samples)"
        )


def pace(events_per_s: float, settings: Settings, span_s: float | None = None) -> Pace:
    """At ``events_per_s``; ``span_s``: a recording shorter than the window's age (a
    backtest) fills at most that much of it."""
    age_s = settings.retrain.window_max_age_s
    if span_s is not None:
        age_s = min(age_s, max(span_s, 0.0))
    in_window = max(events_per_s, 0.0) * age_s
    rate = settings.drift.sample_rate

    def needed(samples: float) -> float:
        return 1.0 if in_window <= 0 else min(1.0, samples / in_window)

    return Pace(
        events_per_s=events_per_s,
        samples_per_window=rate * in_window,
        sample_rate=rate,
        min_sample_rate=needed(settings.retrain.min_samples),
        filling_sample_rate=needed(settings.retrain.window_max_samples),
        min_samples_needed=settings.retrain.min_samples,
    )
