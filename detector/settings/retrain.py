"""``[retrain]``: the retraining job and its validation gate."""

from __future__ import annotations

from pydantic import Field

from detector.settings.base import DISTRIBUTION_TESTS, DriftTest, Section


class RetrainSettings(Section):
    """The retraining job and its validation gate."""

    window_max_samples: int = Field(
        50_000, ge=100, description="Most recent samples read from the samples topic."
    )
    window_max_age_s: float = Field(
        7 * 86_400,
        gt=0,
        description="Samples whose event time is older than this before the window's newest sample are ignored (not the clock: a backfill or replay of history trains on its own last span).",
    )
    window_max_future_s: float = Field(
        3_600,
        ge=0,
        description="A sample stamped more than this after the retrainer's clock is future-dated (a producer's clock error): it is left out of the window and never counts as its newest.",
    )
    min_samples: int = Field(
        1_000, ge=50, description="Fewer usable samples than this: refuse, keep the current model."
    )
    max_alerted_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="A window where more than this share alerted is mostly anomalies: refuse.",
    )
    max_alerted_fraction_one_series: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="The limit for a window that is one series (one entity holds 90% of it; events without an entity are one): with no other machines to compare with, alerting on more than this share (ten times the usual 1% target) is taken as a fault or an attack, not a state to learn. Never looser than max_alerted_fraction. A slow drift starts a retrain (on drift) well before it alerts this much; a lasting step of the series stays refused: retrain by hand (docs/drift-and-retraining.md).",
    )
    holdout_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description="Newest share of the window held out to validate the candidate.",
    )
    alert_rate_tolerance: float = Field(
        0.5,
        gt=0,
        description="Candidate's warning alert rate on the holdout must be within target * (1 +- this).",
    )
    max_worse_margin: float = Field(
        0.05,
        ge=0.0,
        description="Candidate's mean log-likelihood on the holdout may trail the current model's by at most this (nats per event; 0.05 is about 5% lower average density, the estimation noise between two equally good fits).",
    )
    trigger_tests: list[DriftTest] = Field(
        default_factory=lambda: list(DISTRIBUTION_TESTS),
        description="Drift tests whose events start a run under --on-drift; the alert rate alone also rises when a few machines are faulty, which retraining does not fix.",
    )
    poll_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Reading the samples topic stops after this long without new records.",
    )
