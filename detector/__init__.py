"""Streaming anomaly detector: a Gaussian mixture learns normal events, calibrated
thresholds turn its log-likelihood into alerts.

The library surface is small on purpose::

    from detector import load_settings, train, ModelRegistry, Scorer

    settings = load_settings("config/detector.toml")
    bundle = train(rows, settings)                 # rows: list of {feature: value}
    ModelRegistry(settings.registry).publish(bundle)
    scorer = Scorer(ModelRegistry(settings.registry).load())
    result = scorer.score(rows)                    # log_likelihood, percentile, severity...
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detector.model.bundle import ModelBundle
    from detector.model.scorer import Scorer, ScoreResult
    from detector.model.train import train
    from detector.registry.store import ModelRegistry
    from detector.settings import Settings, load_settings

# Imported on first use: the fetch process imports ``detector.stream.fetcher`` and must
# not pay for the model stack (scikit-learn, scipy) it never uses.
_EXPORTS = {
    "ModelBundle": "detector.model.bundle",
    "ModelRegistry": "detector.registry.store",
    "ScoreResult": "detector.model.scorer",
    "Scorer": "detector.model.scorer",
    "Settings": "detector.settings",
    "load_settings": "detector.settings",
    "train": "detector.model.train",
}

__all__ = [
    "ModelBundle",
    "ModelRegistry",
    "ScoreResult",
    "Scorer",
    "Settings",
    "load_settings",
    "train",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'detector' has no attribute {name!r}")
    return getattr(import_module(module), name)
