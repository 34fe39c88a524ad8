"""All configuration in one place: the ``Settings`` class and how it is loaded.

Precedence, highest first: explicit arguments (CLI flags) > environment variables
(``DETECTOR_`` prefix, ``__`` between nested keys, e.g. ``DETECTOR_REGISTRY__PATH``) >
a TOML file (``--config PATH`` or ``DETECTOR_CONFIG``) > the defaults below.
Every knob has a type, a default, a bound and a description; ``config/detector.toml``
repeats them with a comment each. Unknown keys and bad values fail at start with a
message naming the key, the value and what is allowed.

One module per section (``kafka.py`` holds ``[kafka]``...); ``loading.py`` holds the
``Settings`` class that gathers them and the loaders. Import from here.
"""

from detector.settings.base import (
    CONFIG_FILE_ENV,
    ENV_PREFIX,
    CovarianceType,
    CrashPoint,
    DriftTest,
)
from detector.settings.drift import DriftSettings
from detector.settings.event import EventSettings
from detector.settings.features import FeatureSettings
from detector.settings.kafka import KafkaSettings
from detector.settings.loading import (
    Settings,
    check_config_file,
    describe_sources,
    flatten,
    format_validation_error,
    load_settings,
    secret_keys,
)
from detector.settings.model import ModelSettings
from detector.settings.registry import RegistrySettings
from detector.settings.retrain import RetrainSettings
from detector.settings.service import ServiceSettings
from detector.settings.thresholds import ThresholdSettings
from detector.settings.training import TrainingSettings

__all__ = [
    "CONFIG_FILE_ENV",
    "ENV_PREFIX",
    "CovarianceType",
    "CrashPoint",
    "DriftSettings",
    "DriftTest",
    "EventSettings",
    "FeatureSettings",
    "KafkaSettings",
    "ModelSettings",
    "RegistrySettings",
    "RetrainSettings",
    "ServiceSettings",
    "Settings",
    "ThresholdSettings",
    "TrainingSettings",
    "check_config_file",
    "describe_sources",
    "flatten",
    "format_validation_error",
    "load_settings",
    "secret_keys",
]
