"""Checks a command makes before it starts anything (a server, a model load, a broker).

A missing or malformed setting fails here with a ``ConfigError`` naming the setting, its
environment variable and its TOML key, so nothing half-starts before saying so.
"""

from __future__ import annotations

from pathlib import Path

from detector.errors import ConfigError
from detector.settings import ENV_PREFIX, Settings
from detector.stream.reach import parse_bootstrap

_KAFKA_FILES = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")


class UsageError(Exception):
    """A command-line value that cannot work (exit 2, one line naming the option)."""


def env_name(dotted_key: str) -> str:
    """``kafka.ssl_cafile`` -> ``DETECTOR_KAFKA__SSL_CAFILE``."""
    return ENV_PREFIX + dotted_key.upper().replace(".", "__")


def check_kafka(settings: Settings) -> None:
    """The settings every broker command needs: bootstrap servers, readable TLS files."""
    parse_bootstrap(settings.kafka.bootstrap_servers)
    check_kafka_files(settings)


def check_kafka_files(settings: Settings) -> None:
    for key in _KAFKA_FILES:
        value = getattr(settings.kafka, key)
        if value is not None and not Path(value).is_file():
            raise ConfigError(
                f'kafka.{key} = "{value}": no such file (env {env_name("kafka." + key)}, '
                f"TOML key {key} under [kafka])"
            )


def check_output(path: Path | None, option: str) -> None:
    """An output file's folder must exist before the work that fills it starts."""
    if path is None or str(path) == "-":
        return
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: the folder {parent} does not exist (create it first)")
