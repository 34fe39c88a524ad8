"""``[thresholds]``: severity levels and alert explanations."""

from __future__ import annotations

from pydantic import Field, model_validator

from detector.settings.base import Section


class ThresholdSettings(Section):
    """Severity levels: each is a low percentile of held-out normal log-likelihoods."""

    levels: dict[str, float] = Field(
        default_factory=lambda: {"warning": 1.0, "critical": 0.1},
        description="Severity name -> percentile of calibration log-likelihoods (1.0 = 1% of normal events alert).",
    )
    top_features: int = Field(
        3,
        ge=1,
        le=50,
        description="Features listed per alert, by contribution to the Mahalanobis distance.",
    )

    @model_validator(mode="after")
    def _levels_valid(self) -> ThresholdSettings:
        if not self.levels:
            raise ValueError("at least one severity level is needed")
        for name, pct in self.levels.items():
            if not (0.0 < pct < 50.0):
                raise ValueError(f"levels.{name} = {pct}: a percentile must be in (0, 50)")
            if name in ("none", ""):
                raise ValueError(f"levels: {name!r} is reserved for 'no alert'")
        if len(set(self.levels.values())) != len(self.levels):
            raise ValueError(f"levels {self.levels}: two severities share a percentile")
        return self
