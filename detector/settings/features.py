"""``[features]``: which columns are features and how they are encoded."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from detector.settings.base import Section


class FeatureSettings(Section):
    """Which columns are features and how they are encoded."""

    @model_validator(mode="after")
    def _windows_valid(self) -> FeatureSettings:
        for name, n in self.temporal.items():
            if not 2 <= n <= 10_000:
                raise ValueError(f"temporal.{name} = {n}: a window must be 2..10000 events")
        return self

    numeric: list[str] | None = Field(
        None, description="Numeric features in order; inferred from the training data when unset."
    )
    categorical: list[str] | None = Field(
        None,
        description="Categorical features (one-hot encoded); inferred (string columns) when unset.",
    )
    log1p: list[str] = Field(
        default_factory=list,
        description="Numeric features transformed with log1p before scaling (heavy-tailed counts: bytes, packets).",
    )
    auto_log1p_skew: float | None = Field(
        10.0,
        gt=0,
        description="When features.log1p is empty, numeric features that are never negative and whose training skewness exceeds this get log1p (heavy-tailed counts); unset = never. 10 was chosen by held-out log-density on training data (see README).",
    )
    exclude: list[str] = Field(default_factory=list, description="Columns never used as features.")
    temporal: dict[str, int] = Field(
        default_factory=dict,
        description="Per-entity temporal features: feature -> window N adds f__diff, f__meanN, f__stdN from the entity's last N events (needs entity and time columns in training data); empty = off.",
    )
    temporal_max_entities: int = Field(
        100_000,
        ge=1,
        description="Entities whose recent values the service keeps (least recently seen evicted first).",
    )
    missing_policy: Literal["marginalize", "impute", "reject"] = Field(
        "marginalize",
        description="Missing value: score on the present features' exact marginal density, impute the training mean, or reject the row.",
    )
    max_missing_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="A row missing more than this share of its features is rejected.",
    )
    max_categories: int = Field(
        200,
        ge=2,
        le=10_000,
        description="A text column with more distinct values than this is an id, not a category: excluded when inferred (shown in training's column table), refused when listed in features.categorical.",
    )
    decimal: Literal[".", ","] = Field(
        ".",
        description='Decimal separator of numbers in CSV files: "." or "," (0,38 reads as 0.38; a "." in a cell is then not a number, thousands separators are not read). With ".", a column of decimal-comma numbers is refused with this hint.',
    )
