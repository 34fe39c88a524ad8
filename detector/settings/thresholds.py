"""``[thresholds]``: how alerts are explained (severities are set at training)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from detector.settings.base import Section

MOVED_LEVELS = (
    "thresholds.levels moved to training.severity_percentiles (env "
    "DETECTOR_TRAINING__SEVERITY_PERCENTILES): severities are fixed when a model is trained "
    "and stored in its bundle; a running service uses the bundle's and never read this key"
)


class ThresholdSettings(Section):
    """How alerts are explained. The severities themselves come from the model bundle."""

    top_features: int = Field(
        3,
        ge=1,
        le=50,
        description="Features listed per alert, by contribution to the Mahalanobis distance.",
    )

    @model_validator(mode="before")
    @classmethod
    def _levels_moved(cls, data: Any) -> Any:
        # A key that looked like a service knob but only acted at training: refused with
        # where it went, not the generic "unknown key".
        if isinstance(data, dict) and "levels" in data:
            raise ValueError(MOVED_LEVELS)
        return data
