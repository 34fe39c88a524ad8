"""``[model]``: the Gaussian mixture and its BIC grid."""

from __future__ import annotations

from pydantic import Field, model_validator

from detector.settings.base import ALL_COVARIANCE_TYPES, CovarianceType, Section


class ModelSettings(Section):
    """The Gaussian mixture and its model-selection grid."""

    n_components_min: int = Field(
        1, ge=1, le=50, description="Smallest number of mixture components tried by the BIC search."
    )
    n_components_max: int = Field(
        10, ge=1, le=50, description="Largest number of mixture components tried by the BIC search."
    )
    covariance_types: list[CovarianceType] = Field(
        default_factory=lambda: list(ALL_COVARIANCE_TYPES),
        min_length=1,
        description="Covariance structures tried by the BIC search.",
    )
    reg_covar: float = Field(
        1e-6,
        gt=0,
        le=1.0,
        description="Added to covariance diagonals (in standardized units) so near-constant features cannot make a component singular.",
    )
    max_iter: int = Field(200, ge=10, le=10_000, description="EM iterations per fit.")
    tol: float = Field(
        1e-3, gt=0, le=1.0, description="EM convergence threshold on the mean log-likelihood gain."
    )
    n_init: int = Field(1, ge=1, le=20, description="EM restarts per grid cell; the best is kept.")
    random_seed: int = Field(
        0,
        ge=0,
        description="Seed for the split, the subsample and EM initialisation: training is reproducible.",
    )

    @model_validator(mode="after")
    def _range_ordered(self) -> ModelSettings:
        if self.n_components_min > self.n_components_max:
            raise ValueError(
                f"n_components_min ({self.n_components_min}) must be <= "
                f"n_components_max ({self.n_components_max})"
            )
        return self
