"""The model registry: versioned bundles on disk, verified before they are unpickled.

Layout::

    DIR/versions/<version>/bundle.joblib   the pickled ModelBundle
    DIR/versions/<version>/manifest.json   version, created time, sha256, spec, summary
    DIR/versions/<version>/manifest.sig    HMAC-SHA256 of manifest.json (when a key is set)
    DIR/versions/<version>/REJECTED.json   why a candidate was not promoted (if it was not)
    DIR/CURRENT                            the active version's name
    DIR/HISTORY                            promotions, oldest first (for rollback)

A version directory is written under a temporary name, fsynced, then renamed: a reader
sees a whole version or none. CURRENT is replaced the same way. Joblib files are
pickles and unpickling runs code, so nothing is loaded before its checks pass.

Faults are typed: a version that cannot be read, unpickled, or is not a model bundle
raises ``ModelIntegrityError`` like a bad checksum; a registry whose CURRENT or
directories cannot be read raises ``RegistryError``. Nothing else escapes a read, so a
service can refuse the version and keep scoring with the one it has. What a dead writer
left behind is removed by the next writer once ``STALE_STAGING_S`` old and not locked.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib

from detector.errors import ModelIntegrityError, RegistryError
from detector.model.bundle import ModelBundle, library_versions
from detector.registry.files import (
    VERSION_NAME,
    _atomic_write,
    _check_bundle,
    _fsync_dir,
    _sha256,
    _write_durable,
    files_in_versions,
    new_version_id,
    read_version_name,
    remove_stale,
    warnings_as_log,
)
from detector.settings import RegistrySettings

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.joblib"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
REJECTED_FILE = "REJECTED.json"
CURRENT_FILE = "CURRENT"
STAGING_PREFIX = ".staging-"
# A publish writes its staging directory in seconds (a bundle is a few MB, then fsync);
# one an hour old belongs to a writer that died (SIGKILL, power loss), and a live writer
# holds a lock on it besides. Temporary files (.CURRENT.*.tmp) are written in milliseconds.
STALE_STAGING_S = 3600.0


@dataclass(frozen=True)
class VersionInfo:
    version: str
    created_at: str
    manifest: dict[str, Any]
    rejected: dict[str, Any] | None
    is_current: bool


class ModelRegistry:
    """Publish, verify, load, promote, roll back and prune model versions."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.root = Path(settings.path)
        self.versions_dir = self.root / "versions"
        key = settings.signing_key
        self._key = key.get_secret_value().encode() if key is not None else None
        self.on_library_mismatch = settings.on_library_mismatch
        self.keep_versions = settings.keep_versions

    # -- writing -----------------------------------------------------------------------
    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialize writers (two retrainers, a promote during a publish) across processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def publish(
        self, bundle: ModelBundle, promote: bool = True, rejected_reason: str | None = None
    ) -> str:
        """Write a new version atomically; make it CURRENT when ``promote``."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        version = new_version_id()
        bundle.version = version
        staging = self.versions_dir / f"{STAGING_PREFIX}{version}"
        staging.mkdir()
        # Held until the rename: a cleaner never deletes a live writer's staging directory.
        staging_fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(staging_fd, fcntl.LOCK_EX)
        try:
            bundle_path = staging / BUNDLE_FILE
            joblib.dump(bundle, bundle_path)
            with bundle_path.open("rb+") as fh:
                os.fsync(fh.fileno())
            manifest = {
                "format": bundle.format,
                "version": version,
                "created_at": bundle.created_at,
                "bundle_file": BUNDLE_FILE,
                "sha256": _sha256(bundle_path),
                "size_bytes": bundle_path.stat().st_size,
                "feature_spec": bundle.spec.to_dict(),
                "chosen": bundle.summary.get("chosen"),
                "thresholds": bundle.thresholds.to_dict(),
                "rows": bundle.summary.get("rows"),
                "validation": bundle.summary.get("validation"),
                "libraries": library_versions(),
            }
            manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
            _write_durable(staging / MANIFEST_FILE, manifest_bytes)
            if self._key is not None:
                _write_durable(staging / SIGNATURE_FILE, self._sign(manifest_bytes).encode())
            if rejected_reason is not None:
                _write_durable(
                    staging / REJECTED_FILE, json.dumps({"reason": rejected_reason}).encode()
                )
            _fsync_dir(staging)
            os.rename(staging, self.versions_dir / version)
            _fsync_dir(self.versions_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            os.close(staging_fd)
        log.info("published model version %s%s", version, " (rejected)" if rejected_reason else "")
        if promote and rejected_reason is None:
            self.promote(version)
        self.prune()
        return version

    def promote(self, version: str, force: bool = False) -> None:
        """Make ``version`` CURRENT after verifying it loads; refuses rejected ones unless forced."""
        info = self.info(version)
        if info.rejected and not force:
            raise RegistryError(
                f"version {version} was rejected ({info.rejected.get('reason')}); use --force"
            )
        self.verify(version)
        self._set_current(version)

    def _set_current(self, version: str) -> None:
        """Point CURRENT at ``version`` (atomic) and append it to HISTORY; no checks."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            try:
                _atomic_write(self.root / CURRENT_FILE, (version + "\n").encode())
            except IsADirectoryError:
                raise RegistryError(
                    f"{self.root / CURRENT_FILE} is a directory: remove it, then promote again"
                ) from None
            with (self.root / "HISTORY").open("a") as fh:
                fh.write(f"{datetime.now(UTC).isoformat()} {version}\n")
                fh.flush()
                os.fsync(fh.fileno())
        log.info("CURRENT is now %s", version)

    def rollback(self) -> str:
        """Promote the version that was CURRENT before the present one."""
        current = self.current()
        history = self._history()
        earlier = [v for v in history if v != current and (self.versions_dir / v).is_dir()]
        if not earlier:
            raise RegistryError("nothing to roll back to: no earlier promoted version exists")
        target = earlier[-1]
        self.promote(target, force=True)
        return target

    def prune(self) -> list[str]:
        """Delete all but the newest ``keep_versions`` versions; never CURRENT.

        Also removes what dead writers left behind (``clean_stale``).
        """
        self.clean_stale()
        try:
            current = self.current()
        except RegistryError as exc:  # which version is CURRENT is unknown: delete none
            log.warning("not pruning: %s", exc)
            return []
        names = [v.version for v in self.list()]
        doomed = [v for v in names[: max(0, len(names) - self.keep_versions)] if v != current]
        for v in doomed:
            shutil.rmtree(self.versions_dir / v, ignore_errors=True)
        return doomed

    def clean_stale(self, older_than_s: float = STALE_STAGING_S) -> list[Path]:
        """Delete staging directories and temporary files of writers that died.

        Only what is older than ``older_than_s`` and not locked by a live writer: a
        staging directory is locked by its publish until renamed; CURRENT's temporary
        file is written under the registry lock, which this holds while cleaning.
        """
        if not self.root.is_dir():
            return []
        cutoff = time.time() - older_than_s
        with self._lock():
            candidates = list(self.root.glob(f".{CURRENT_FILE}.*.tmp"))
            candidates += self.versions_dir.glob(f"{STAGING_PREFIX}*")  # none without the dir
            candidates += files_in_versions(self.versions_dir, f".{REJECTED_FILE}.*.tmp")
            removed = remove_stale(candidates, cutoff)
        return removed

    def close(self) -> None:
        """Release what the registry holds open: nothing here (the topic registry: its reader)."""

    # -- reading -----------------------------------------------------------------------
    def current(self) -> str | None:
        """The CURRENT version's name; None when there is none yet.

        Raises ``RegistryError`` when CURRENT exists but cannot be read as a file holding
        one version name (a directory, no permission, garbage).
        """
        return read_version_name(self.root / CURRENT_FILE)

    def _history(self) -> list[str]:
        try:
            lines = (self.root / "HISTORY").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [ln.split()[-1] for ln in lines if ln.strip()]

    def list(self) -> list[VersionInfo]:
        """Every version, oldest first."""
        try:
            if not self.versions_dir.is_dir():
                return []
            names = [d.name for d in self.versions_dir.iterdir() if d.is_dir()]
        except OSError as exc:
            raise RegistryError(f"cannot read {self.versions_dir}: {exc.strerror or exc}") from None
        infos = []
        current = self.current()
        for name in names:
            if not name.startswith("."):
                try:
                    infos.append(self._info(name, current))
                except ModelIntegrityError:
                    continue  # listed by `models list` as broken via verify; not loadable
        return sorted(infos, key=lambda i: (i.created_at, i.version))

    def info(self, version: str) -> VersionInfo:
        return self._info(version, self.current())

    def _info(self, version: str, current: str | None) -> VersionInfo:
        d = self._version_dir(version)
        if not d.is_dir():
            raise RegistryError(f"no model version {version!r} in {self.versions_dir}")
        _, manifest = self._read_manifest(d)
        rejected = None
        try:
            if (d / REJECTED_FILE).exists():
                rejected = json.loads((d / REJECTED_FILE).read_text())
        except (OSError, ValueError) as exc:
            rejected = {"reason": f"{REJECTED_FILE} unreadable: {exc}"}
        return VersionInfo(
            version,
            str(manifest.get("created_at", "")),
            manifest,
            rejected,
            version == current,
        )

    def _read_manifest(self, d: Path) -> tuple[bytes, dict[str, Any]]:
        """The manifest's bytes (what the signature covers) and their parsed content."""
        try:
            raw = (d / MANIFEST_FILE).read_bytes()
            data = json.loads(raw)
        except FileNotFoundError:
            raise ModelIntegrityError("manifest", f"{d / MANIFEST_FILE} is missing") from None
        except OSError as exc:
            raise ModelIntegrityError(
                "unreadable", f"cannot read {d / MANIFEST_FILE}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:
            raise ModelIntegrityError(
                "manifest", f"{d / MANIFEST_FILE} is not valid JSON: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise ModelIntegrityError("manifest", f"{d / MANIFEST_FILE} is not a JSON object")
        return raw, data

    def _sign(self, manifest_bytes: bytes) -> str:
        assert self._key is not None
        return hmac.new(self._key, manifest_bytes, hashlib.sha256).hexdigest()

    def verify(self, version: str) -> dict[str, Any]:
        """Run every check that does not need unpickling; return the manifest."""
        return self._verified(version)[0]

    def _version_dir(self, version: str) -> Path:
        if not VERSION_NAME.fullmatch(version):
            raise RegistryError(f"{version[:60]!r} is not a version name")
        return self.versions_dir / version

    def _verified(self, version: str) -> tuple[dict[str, Any], bytes]:
        """The manifest and the bundle's bytes, after every check on exactly those bytes."""
        try:
            return self._verified_unguarded(version)
        except OSError as exc:  # unreadable file or directory: refused like a bad checksum
            raise ModelIntegrityError(
                "unreadable",
                f"version {version}: cannot read {exc.filename or ''}: {exc.strerror or exc}",
            ) from None

    def _verified_unguarded(self, version: str) -> tuple[dict[str, Any], bytes]:
        d = self._version_dir(version)
        if not d.is_dir():
            raise ModelIntegrityError(
                "missing", f"model version {version!r} not found in {self.versions_dir}"
            )
        manifest_bytes, manifest = self._read_manifest(d)
        if self._key is not None:
            sig_path = d / SIGNATURE_FILE
            if not sig_path.exists():
                raise ModelIntegrityError(
                    "signature",
                    f"version {version} has no {SIGNATURE_FILE} but registry.signing_key is set",
                )
            expected = self._sign(manifest_bytes)
            if not hmac.compare_digest(expected, sig_path.read_text().strip()):
                raise ModelIntegrityError(
                    "signature",
                    f"version {version}: manifest signature does not match registry.signing_key",
                )
        bundle_path = d / str(manifest.get("bundle_file", BUNDLE_FILE))
        if bundle_path.parent != d:
            raise ModelIntegrityError(
                "manifest", f"version {version}: bundle_file must be a file name in {d}"
            )
        if not bundle_path.exists():
            raise ModelIntegrityError(
                "missing", f"version {version}: {bundle_path.name} is missing"
            )
        bundle_bytes = bundle_path.read_bytes()
        actual = hashlib.sha256(bundle_bytes).hexdigest()
        if actual != manifest.get("sha256"):
            raise ModelIntegrityError(
                "checksum",
                f"version {version}: bundle sha256 {actual[:12]}... does not match the manifest's "
                f"{str(manifest.get('sha256'))[:12]}...; the file changed after publishing",
            )
        made_with = manifest.get("libraries", {}).get("scikit-learn")
        running = library_versions()["scikit-learn"]
        if made_with != running:
            msg = f"version {version} was made with scikit-learn {made_with}, this is {running}"
            if self.on_library_mismatch == "refuse":
                raise ModelIntegrityError(
                    "library_version", msg + " (registry.on_library_mismatch = refuse)"
                )
            log.warning("%s; loading anyway (registry.on_library_mismatch = warn)", msg)
        return manifest, bundle_bytes

    def load(self, version: str | None = None) -> ModelBundle:
        """Verify, then unpickle. ``None`` loads CURRENT."""
        if version is None:
            version = self.current()
            if version is None:
                raise RegistryError(
                    f"no CURRENT model in {self.root}; train one with `detector train`"
                )
        # Unpickle the very bytes that were verified: the file may change after the check.
        _, bundle_bytes = self._verified(version)
        try:
            with warnings_as_log():
                bundle = joblib.load(io.BytesIO(bundle_bytes))
        except Exception as exc:
            # Truncated or corrupt bytes whose checksum matches (the manifest was made for
            # them): as unusable as a bad checksum, and it must not crash the caller.
            raise ModelIntegrityError(
                "load", f"version {version}: the bundle does not load: {type(exc).__name__}: {exc}"
            ) from None
        _check_bundle(version, bundle)
        bundle.version = version
        return bundle
