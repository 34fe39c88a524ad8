"""``[training]``: how training data is split, subsampled and searched."""

from __future__ import annotations

from pydantic import Field, model_validator

from detector.settings.base import Section


class TrainingSettings(Section):
    """How training data is split, subsampled and searched, and which severities it calibrates."""

    severity_percentiles: dict[str, float] = Field(
        default_factory=lambda: {"warning": 1.0, "critical": 0.1},
        description="Severity name -> percentile of held-out normal log-likelihoods its threshold sits at (1.0 = 1% of normal events alert at least at that severity). Stored in the bundle: changing it needs a retrain.",
    )

    calibration_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description="Share of normal rows held out to calibrate thresholds (never used to fit).",
    )
    bic_subsample_rows: int = Field(
        50_000,
        ge=1_000,
        description="The BIC grid search fits on a seeded subsample of at most this many rows; the winner is refit on all fit rows.",
    )
    n_jobs: int = Field(
        2, ge=1, le=64, description="Parallel processes for the BIC grid search (joblib)."
    )
    min_rows: int = Field(
        200,
        ge=10,
        description="Fewer normal rows than this is refused: thresholds at the 0.1th percentile need data.",
    )
    max_calibration_rows_stored: int = Field(
        50_000,
        ge=1_000,
        description="Calibration rows kept in the bundle for marginal (missing-feature) thresholds and percentiles.",
    )
    label_column: str | None = Field(
        None,
        description="Column with 0 = normal, 1 = anomaly; anomalous rows are dropped from training.",
    )
    timestamp_column: str = Field(
        "timestamp",
        description="Column holding the event time in CSV files; never used as a feature.",
    )
    entity_column: str = Field(
        "entity", description="Column holding the entity id in CSV files; never used as a feature."
    )

    @model_validator(mode="after")
    def _severities_valid(self) -> TrainingSettings:
        levels = self.severity_percentiles
        if not levels:
            raise ValueError("severity_percentiles: at least one severity is needed")
        for name, pct in levels.items():
            if not (0.0 < pct < 50.0):
                raise ValueError(
                    f"severity_percentiles.{name} = {pct}: a percentile must be in (0, 50)"
                )
            if name in ("none", ""):
                raise ValueError(f"severity_percentiles: {name!r} is reserved for 'no alert'")
        if len(set(levels.values())) != len(levels):
            raise ValueError(f"severity_percentiles {levels}: two severities share a percentile")
        return self
