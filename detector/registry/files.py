"""The registry's file work: durable and atomic writes, checksums, locked removal, and the
type check of an unpickled bundle. ``detector.registry.store`` says why each is needed."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detector.errors import ModelIntegrityError, RegistryError
from detector.model.bundle import ModelBundle

log = logging.getLogger(__name__)

# Version names as new_version_id makes them (and simple hand-made ones): never a path.
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# CURRENT holds one version name; anything much longer is not a CURRENT file.
_CURRENT_MAX_BYTES = 4096


def new_version_id() -> str:
    """Sortable by creation time and unique across concurrent writers."""
    now = datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


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


def remove_stale(candidates: list[Path], cutoff: float) -> list[Path]:
    """Remove the paths last changed before ``cutoff`` (a directory only if unlocked)."""
    removed: list[Path] = []
    for path in candidates:
        try:
            if path.lstat().st_mtime > cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                if not _remove_unlocked_dir(path):
                    continue
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not remove stale %s: %s", path, exc)
            continue
        removed.append(path)
    return removed


def read_version_name(path: Path) -> str | None:
    """The version name a CURRENT file holds; None when there is none yet.

    Raises ``RegistryError`` when it exists but cannot be read as a file holding one
    version name (a directory, no permission, garbage).
    """
    try:
        with path.open("rb") as fh:
            raw = fh.read(_CURRENT_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise RegistryError(f"{path} is a directory, not a file naming a version") from None
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        name = raw.decode().strip()
    except UnicodeDecodeError:
        raise RegistryError(f"{path} is not text: not a CURRENT file") from None
    if not name:
        return None
    if len(raw) > _CURRENT_MAX_BYTES or not VERSION_NAME.fullmatch(name):
        raise RegistryError(f"{path} does not hold a version name: {name[:60]!r}")
    return name


def files_in_versions(versions_dir: Path, pattern: str) -> list[Path]:
    """The files matching ``pattern`` inside each entry of ``versions_dir``.

    A concurrent publisher may rename its staging directory between the listing and the
    look inside it (a ``glob("*/...")`` then raised FileNotFoundError mid-publish): a
    directory gone meanwhile has nothing to find.
    """
    found: list[Path] = []
    if not versions_dir.is_dir():
        return found
    for child in list(versions_dir.iterdir()):
        try:
            found += child.glob(pattern)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found
