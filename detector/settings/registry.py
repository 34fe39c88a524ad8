"""``[registry]``: where model versions live and how they are trusted."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from detector.settings.base import Section


class RegistrySettings(Section):
    """Where model versions live and how they are trusted."""

    backend: Literal["directory", "kafka"] = Field(
        "directory",
        description="Where versions live: a directory every replica reads (registry.path), or a compacted Kafka topic (registry.topic) each replica mirrors into its own registry.path (no shared disk).",
    )
    path: Path = Field(
        Path("models"),
        description="Registry directory: versions/<version>/ and CURRENT (with backend kafka: this replica's local mirror of the topic).",
    )
    topic: str = Field(
        "detector-models",
        min_length=1,
        description="backend kafka: the compacted topic holding versions, promotions and rollbacks (create it with cleanup.policy=compact, one partition).",
    )
    chunk_bytes: int = Field(
        512 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="backend kafka: a version's files are sent in records of at most this many bytes (under the producer's and the topic's message size limits).",
    )
    sync_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="backend kafka: at start, how long to read the topic to its end before loading CURRENT (not ready meanwhile).",
    )
    signing_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key: when set, manifests are signed and unsigned or wrongly signed models are refused.",
    )
    keep_versions: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Retention: the newest N versions are kept (CURRENT is never deleted).",
    )
    on_library_mismatch: Literal["warn", "refuse"] = Field(
        "warn",
        description="A bundle made with another scikit-learn version: warn and load, or refuse.",
    )
