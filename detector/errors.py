"""Every error the detector raises on purpose.

One small hierarchy, so callers can catch by meaning (a bad event is dead-lettered, a bad
config stops start-up, a model that fails integrity checks is never loaded) rather than
by message text.
"""

from __future__ import annotations


class DetectorError(Exception):
    """Base class of every error raised on purpose by the detector."""


class ConfigError(DetectorError):
    """A configuration value is missing, unknown or out of bounds.

    Raised at start-up; the message names the key, the value and what is allowed.
    """


class DataError(DetectorError):
    """An input file (CSV / JSON lines) cannot be used for training or scoring."""


class BadEventError(DetectorError):
    """One event cannot be scored; it goes to the dead-letter topic.

    ``reason`` is a stable machine-readable code (``invalid_json``, ``not_an_object``,
    ``missing_features``, ``bad_value``, ``too_large``, ``empty``); the message is for humans.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TrainingError(DetectorError):
    """Training could not produce a model (too few rows, no grid cell converged...)."""


class RetrainRefused(TrainingError):
    """The retraining window is unfit to train on; the current model stays.

    ``reason`` is a stable code (``too_few_samples``, ``mostly_anomalies``, ``constant_feature``).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelIntegrityError(DetectorError):
    """A model bundle failed a check before loading; it was NOT unpickled.

    ``check`` names the failed check: ``manifest``, ``checksum``, ``signature``,
    ``library_version`` or ``missing``.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class RegistryError(DetectorError):
    """The model registry has no such version, no CURRENT, or a refused operation."""


class BrokerUnavailableError(DetectorError):
    """The Kafka broker cannot be reached (or the embedded one cannot be started)."""


class BrokerSetupError(BrokerUnavailableError):
    """The local Apache Kafka broker cannot be set up: no java 17+, no mvn, or the jar fetch failed."""
