"""The model bundle: everything needed to score, in one pickled object.

Scaler + mixture + thresholds + feature spec + training summary + version. The registry
writes it with a checksum (and signature) and refuses to unpickle one that fails them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from detector.features.spec import FeatureSpec
from detector.model.thresholds import Thresholds

BUNDLE_FORMAT = 1


@dataclass
class ModelBundle:
    spec: FeatureSpec
    scaler: StandardScaler
    mixture: GaussianMixture
    thresholds: Thresholds
    # Scaled calibration rows, so thresholds for rows with missing features can be
    # calibrated on the same rows marginalized to the same features.
    calibration_rows: np.ndarray
    summary: dict[str, Any]
    created_at: str
    version: str = ""
    format: int = field(default=BUNDLE_FORMAT)

    @property
    def description(self) -> str:
        chosen = self.summary.get("chosen", {})
        return (
            f"version {self.version or '(unpublished)'}: GMM K={chosen.get('n_components')} "
            f"{chosen.get('covariance_type')}, {len(self.spec.features)} features, "
            f"thresholds {self.thresholds.to_dict()}"
        )


def library_versions() -> dict[str, str]:
    """Versions that change what a pickle means or how it scores."""
    import platform

    import joblib
    import scipy
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
    }
