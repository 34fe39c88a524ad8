"""``[features]``: which columns are features and how they are encoded."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from detector.features.temporal import DEFAULT_HALFLIFE_EVENTS, TemporalPlan
from detector.settings.base import Section

TemporalForm = Literal["diff", "mean", "std", "dev"]


def _default_forms() -> list[TemporalForm]:
    return ["diff", "mean", "std"]


class FeatureSettings(Section):
    """Which columns are features and how they are encoded."""

    @model_validator(mode="after")
    def _windows_valid(self) -> FeatureSettings:
        for name, n in self.temporal.items():
            if not 2 <= n <= 10_000:
                raise ValueError(f"temporal.{name} = {n}: a window must be 2..10000 events")
        return self

    @model_validator(mode="after")
    def _forms_distinct(self) -> FeatureSettings:
        if len(set(self.temporal_forms)) != len(self.temporal_forms):
            raise ValueError(f"temporal_forms = {self.temporal_forms}: a form is listed twice")
        return self

    @property
    def temporal_plan(self) -> TemporalPlan:
        """The temporal features training derives (empty when features.temporal is)."""
        return TemporalPlan(
            dict(self.temporal),
            tuple(self.temporal_forms),
            self.temporal_halflife_events,
            self.temporal_peer,
        )

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
        description="Per-entity temporal features: feature -> window N adds the forms of features.temporal_forms (by default f__diff, f__meanN, f__stdN) from the entity's last N events (training needs a time column; without an entity column the file is one series); empty = off.",
    )
    temporal_forms: list[TemporalForm] = Field(
        default_factory=_default_forms,
        min_length=1,
        description="Which temporal features each feature in features.temporal gets: diff (change since the entity's previous value), mean / std (of its last N values), dev (value minus the entity's slow baseline, see temporal_halflife_events). diff, std and dev are level-invariant.",
    )
    temporal_halflife_events: float = Field(
        DEFAULT_HALFLIFE_EVENTS,
        ge=1.0,
        le=1_000_000.0,
        description="Half-life, in the entity's events, of the baseline the dev form subtracts (an exponentially weighted mean): how fast a level shift stops counting as a deviation.",
    )
    temporal_peer: bool = Field(
        False,
        description="For a fleet of like machines: each temporal feature minus the median of the same feature's latest value over the last 15 other entities seen, so a change the whole fleet shares at once (a level shift, a common cycle) cancels out while one machine's fault stands out. Needs 4+ entities (training refuses fewer); until 3 others have reported (start, rebalance) the forms are missing, as in warm-up (detector_temporal_warmup_rows_total), so a replica whose partitions hold fewer than 4 entities never has them. Costs a median of up to 15 values per temporal feature per event.",
    )
    temporal_raw: bool = Field(
        True,
        description="Keep the raw value of each feature in features.temporal as a feature too. false: only its temporal forms are features, so with level-invariant forms (diff, std, dev) a per-entity offset or a level shift of the fleet does not flood alerts.",
    )
    temporal_auto: bool = Field(
        False,
        description="Let training choose between the features as configured and level-invariant forms of every numeric feature (diff, std, dev, window 10, raw level left out) by validation on its own newest 20% of rows and, with 4+ entities, a quarter of the entities held out: the level-invariant forms win only when the configured features alert on that held-out normal data at over twice the target (and 3 standard errors) and they alert less. The choice and its figures are in the model card. Needs a time column.",
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
