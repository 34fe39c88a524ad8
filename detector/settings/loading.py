"""The ``Settings`` class and how it is loaded from arguments, environment and TOML."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from detector.errors import ConfigError
from detector.settings.base import CONFIG_FILE_ENV, ENV_PREFIX
from detector.settings.drift import DriftSettings
from detector.settings.event import EventSettings
from detector.settings.features import FeatureSettings
from detector.settings.kafka import KafkaSettings
from detector.settings.model import ModelSettings
from detector.settings.registry import RegistrySettings
from detector.settings.retrain import RetrainSettings
from detector.settings.service import ServiceSettings
from detector.settings.thresholds import ThresholdSettings
from detector.settings.training import TrainingSettings


class Settings(BaseSettings):
    """The detector's whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    model: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    thresholds: ThresholdSettings = Field(default_factory=ThresholdSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    event: EventSettings = Field(default_factory=EventSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _TOML_PATH.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


# The TOML path is chosen per load (CLI flag or env), so it travels in a context variable
# rather than in class-level config that would leak between loads.
_TOML_PATH: ContextVar[Path | None] = ContextVar("detector_toml_path", default=None)


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the effective settings; raise ``ConfigError`` naming every bad key.

    ``overrides`` are explicit arguments (CLI flags) as a nested dict, e.g.
    ``{"registry": {"path": "models"}}``. ``environ`` defaults to ``os.environ`` and is
    only read for ``DETECTOR_CONFIG``; pydantic-settings reads the prefixed variables.
    """
    env = os.environ if environ is None else environ
    path = Path(config_file) if config_file else None
    if path is None and env.get(CONFIG_FILE_ENV):
        path = Path(env[CONFIG_FILE_ENV])
    if path is not None:
        _read_toml(path)  # a missing or unparsable file names itself before anything else
    token = _TOML_PATH.set(path)
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=path)) from None
    except SettingsError as exc:
        # An environment variable holding a whole section that is not JSON; the message
        # names the field and the source, never the value (it may hold a secret).
        raise ConfigError(
            f"invalid configuration: {exc}; a section set as one variable must be a JSON "
            f"object, or set each key as {ENV_PREFIX}SECTION__KEY"
        ) from None
    finally:
        _TOML_PATH.reset(token)


def check_config_file(path: str | Path) -> Settings:
    """Validate one TOML file on its own (environment ignored): ``detector config check``."""
    data = _read_toml(Path(path))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=Path(path))) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def secret_keys(model: type[BaseModel] | None = None, prefix: str = "") -> set[str]:
    """Dotted names of every ``SecretStr`` setting (``kafka.sasl_password``...)."""
    out: set[str] = set()
    for name, info in (model or Settings).model_fields.items():
        annotation = info.annotation
        args = getattr(annotation, "__args__", ()) or ()
        if annotation is SecretStr or SecretStr in args:
            out.add(prefix + name)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out |= secret_keys(annotation, f"{prefix}{name}.")
    return out


def _looks_secret(key: str) -> bool:
    return key in secret_keys()


def format_validation_error(exc: ValidationError, source: Path | None = None) -> str:
    """One line per bad key: ``key = value: what is allowed``.

    No value of a secret setting is ever shown, nor the value of an unknown key (a
    misspelt secret is still a secret); as a last guard, any string given to a secret or
    unknown key is blanked out of every line, pydantic's own message included.
    """
    lines = []
    hidden: set[str] = set()
    where = f" (config file {source}, environment {ENV_PREFIX}*)" if source else ""
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(settings)"
        value = err.get("input")
        if err["type"] == "extra_forbidden" or _looks_secret(key):
            hidden |= set(_strings(value))
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (value not shown); check the spelling")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        shown = "***" if _looks_secret(key) else repr(value)
        if isinstance(value, dict):
            lines.append(f"{key}: {msg}")
        else:
            lines.append(f"{key} = {shown}: {msg}")
    text = f"invalid configuration{where}:\n  " + "\n  ".join(lines)
    for secret in sorted(hidden, key=len, reverse=True):
        if len(secret) >= 3:  # blanking "a" or "1" would garble the message, not protect it
            text = text.replace(secret, "***")
    return text


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif value is not None:
        yield str(value)


# Settings whose value is itself a mapping (the old name kept so its error can say where
# it went).
DICT_VALUED_KEYS = ("severity_percentiles", "levels")


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted.key, value)`` leaves of a nested mapping (a dict-valued setting such
    as ``training.severity_percentiles`` stays whole)."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and key not in DICT_VALUED_KEYS:
            yield from flatten(value, f"{dotted}.")
        else:
            yield dotted, value


def describe_sources(
    settings: Settings,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, str, str]]:
    """``(key, shown value, where it came from)`` for ``detector config show``; secrets masked."""
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    path = Path(config_file) if config_file else None
    if path is None and env.get(CONFIG_FILE_ENV):
        path = Path(env[CONFIG_FILE_ENV])
    from_file = dict(flatten(_read_toml(path))) if path else {}
    from_args = dict(flatten(overrides or {}))
    rows = []
    for key, value in flatten(settings.model_dump()):
        env_name = ENV_PREFIX + key.upper().replace(".", "__")
        if key in from_args:
            origin = "argument"
        elif env_name in env:
            origin = f"env {env_name}"
        elif key in from_file:
            origin = f"file {path}"
        else:
            origin = "default"
        shown = "**********" if isinstance(value, SecretStr) else repr(value)
        rows.append((key, shown, origin))
    return rows
