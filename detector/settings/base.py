"""What every settings section shares: strict keys and the small enumerated types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "DETECTOR_"
CONFIG_FILE_ENV = "DETECTOR_CONFIG"

CovarianceType = Literal["full", "tied", "diag", "spherical"]
DriftTest = Literal["alert_rate", "mean_log_likelihood", "psi"]
DISTRIBUTION_TESTS: tuple[DriftTest, ...] = ("mean_log_likelihood", "psi")
ALL_COVARIANCE_TYPES: tuple[CovarianceType, ...] = ("full", "tied", "diag", "spherical")
# Points of an exactly-once transaction where a test can kill the service (delivery.py).
CrashPoint = Literal["in_transaction", "before_offsets", "before_commit", "after_commit"]


class Section(BaseModel):
    # Unknown keys are typos more often than not: refuse them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
