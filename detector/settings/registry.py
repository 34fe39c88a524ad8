"""``[registry]``: where model versions live and how they are trusted."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from detector.settings.base import Section


class RegistrySettings(Section):
    """Where model versions live and how they are trusted."""

    path: Path = Field(
        Path("models"), description="Registry directory: versions/<version>/ and CURRENT."
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
