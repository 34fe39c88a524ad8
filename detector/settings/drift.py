"""``[drift]``: the drift window's sampling and statistics."""

from __future__ import annotations

from pydantic import Field

from detector.settings.base import Section


class DriftSettings(Section):
    """The drift window: sampling for retraining and drift statistics."""

    sample_rate: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Share of scored events published to the samples topic (1% of 5,000 ev/s fills a 50,000-row window in under 20 minutes).",
    )
    max_samples_per_batch: int = Field(200, ge=0, description="Cap on samples published per batch.")
    include_alerted: bool = Field(
        True,
        description="Also publish alerted rows, flagged: they count towards retrain.max_alerted_fraction (and max_alerted_fraction_one_series) and are fitted (a fleet-wide operating point is learnt from them), except those of a machine alerting far above the others (its fault, detector/retrain/faulty.py).",
    )
    window_events: int = Field(
        5_000, ge=100, description="Sliding window of recent events the drift statistics cover."
    )
    min_window_events: int = Field(
        1_000, ge=50, description="No drift verdict before the window holds this many events."
    )
    alert_rate_p_value: float = Field(
        1e-4,
        gt=0,
        lt=0.5,
        description="Binomial test: alert rate drift when P(at least this many alerts | calibrated rate) is below this.",
    )
    mean_ll_z: float = Field(
        6.0,
        gt=0,
        description="Mean log-likelihood drift when it is this many standard errors below the calibration mean.",
    )
    psi_threshold: float = Field(
        0.25,
        gt=0,
        description="Population stability index per feature above which the feature has drifted (0.25 = major shift, the usual rule).",
    )
    clear_ratio: float = Field(
        0.5,
        gt=0,
        le=1.0,
        description="A firing test clears only when its statistic is back within this share of the threshold (p-value: this power of it), so a window hovering at the threshold raises one event.",
    )
    publish_events: bool = Field(
        True, description="Publish a drift event to kafka.drift_topic when a test fires."
    )
