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

from detector.model.bundle import ModelBundle
from detector.model.scorer import Scorer, ScoreResult
from detector.model.train import train
from detector.registry.store import ModelRegistry
from detector.settings import Settings, load_settings

__all__ = [
    "ModelBundle",
    "ModelRegistry",
    "ScoreResult",
    "Scorer",
    "Settings",
    "load_settings",
    "train",
]
