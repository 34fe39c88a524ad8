"""The registry's file work: durable and atomic writes, checksums, locked removal, and the
type check of an unpickled bundle. ``detector.registry.store`` says why each is needed."""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from detector.errors import ModelIntegrityError
from detector.model.bundle import ModelBundle


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        _write_durable(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_bundle(version: str, bundle: Any) -> None:
    """Refuse an unpickled object that is not a whole ModelBundle (wrong type inside)."""
    if not isinstance(bundle, ModelBundle):
        raise ModelIntegrityError(
            "type", f"version {version}: the bundle is a {type(bundle).__name__}, not a ModelBundle"
        )
    from sklearn.mixture import GaussianMixture
    from sklearn.preprocessing import StandardScaler

    from detector.features.spec import FeatureSpec
    from detector.model.thresholds import Thresholds

    expected = {
        "spec": FeatureSpec,
        "scaler": StandardScaler,
        "mixture": GaussianMixture,
        "thresholds": Thresholds,
        "summary": dict,
    }
    for name, kind in expected.items():
        value = getattr(bundle, name, None)
        if not isinstance(value, kind):
            raise ModelIntegrityError(
                "type",
                f"version {version}: bundle.{name} is a {type(value).__name__}, not a {kind.__name__}",
            )


def _remove_unlocked_dir(path: Path) -> bool:
    """rmtree ``path`` unless a live writer holds its lock; False when it was locked."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(path)
        return True
    finally:
        os.close(fd)


@contextmanager
def warnings_as_log() -> Iterator[None]:
    """sklearn warns on unpickling across versions; verify() already logged that decision."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Trying to unpickle estimator.*")
        yield
