"""Registry faults: every unusable version or registry state is a typed refusal, never a crash.

Also: staging leftovers of dead writers are cleaned by the next writer, never a live one's.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
import time
from pathlib import Path

import joblib
import pytest

import detector.registry.store as store
from detector.errors import ModelIntegrityError, RegistryError
from detector.registry.store import BUNDLE_FILE, MANIFEST_FILE, STALE_STAGING_S, ModelRegistry
from detector.settings import RegistrySettings


def registry(path: Path) -> ModelRegistry:
    return ModelRegistry(RegistrySettings(path=path))


def reseal(reg: ModelRegistry, version: str, data: bytes) -> None:
    """Replace a version's bundle bytes and make the manifest's sha256 match them."""
    d = reg.versions_dir / version
    (d / BUNDLE_FILE).write_bytes(data)
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    (d / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))


def test_current_as_a_directory_is_a_registry_error(tmp_path: Path, small_bundle) -> None:
    # Given a registry whose CURRENT was replaced by a directory
    reg = registry(tmp_path)
    reg.publish(small_bundle)
    (tmp_path / "CURRENT").unlink()
    (tmp_path / "CURRENT").mkdir()
    # When CURRENT is read or loaded / Then a RegistryError says what is wrong
    with pytest.raises(RegistryError, match="CURRENT is a directory"):
        reg.current()
    with pytest.raises(RegistryError, match="is a directory"):
        reg.load()


@pytest.mark.parametrize(
    "content, named",
    [(b"../../etc/passwd\n", "does not hold a version name"), (b"\xff\xfe\x00", "not text")],
)
def test_current_holding_garbage_is_a_registry_error(
    tmp_path: Path, small_bundle, content: bytes, named: str
) -> None:
    # Given CURRENT holding a path or binary garbage
    reg = registry(tmp_path)
    reg.publish(small_bundle)
    (tmp_path / "CURRENT").write_bytes(content)
    # When it is read / Then it is refused, never followed as a path
    with pytest.raises(RegistryError, match=named):
        reg.current()


def test_unreadable_registry_is_a_registry_error(tmp_path: Path, small_bundle, monkeypatch) -> None:
    # Given a registry path that is a file (not a directory), and one denying reads
    not_a_dir = tmp_path / "models"
    not_a_dir.write_text("oops")
    denied = registry(tmp_path / "denied")
    denied.publish(small_bundle)
    real_open = Path.open

    def no_permission(self: Path, *args, **kwargs):
        if self.name in ("CURRENT", MANIFEST_FILE):
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", no_permission)
    # When CURRENT is read / Then both are RegistryErrors naming the file and the cause
    with pytest.raises(RegistryError, match=r"cannot read .*models/CURRENT"):
        registry(not_a_dir).current()
    with pytest.raises(RegistryError, match=r"cannot read .*CURRENT: Permission denied"):
        denied.current()


def test_unreadable_version_is_refused_like_a_bad_checksum(
    tmp_path: Path, small_bundle, monkeypatch
) -> None:
    # Given a version whose bundle cannot be read
    reg = registry(tmp_path)
    v = reg.publish(small_bundle)
    real = Path.read_bytes

    def denied(self: Path) -> bytes:
        if self.name == BUNDLE_FILE:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    # When it is loaded / Then it is a ModelIntegrityError (check "unreadable")
    with pytest.raises(ModelIntegrityError) as err:
        reg.load(v)
    assert err.value.check == "unreadable" and "Permission denied" in str(err.value)


def test_truncated_bundle_with_matching_checksum_is_refused(tmp_path: Path, small_bundle) -> None:
    # Given a version whose bundle was truncated before its manifest was written
    reg = registry(tmp_path)
    v = reg.publish(small_bundle)
    data = (reg.versions_dir / v / BUNDLE_FILE).read_bytes()
    reseal(reg, v, data[: len(data) // 2])
    reg.verify(v)  # every check before unpickling passes
    # When it is loaded / Then the unpickling failure is a refusal, not a ValueError
    with pytest.raises(ModelIntegrityError) as err:
        reg.load(v)
    assert err.value.check == "load" and "does not load" in str(err.value)


def test_bundle_of_the_wrong_type_is_refused(tmp_path: Path, small_bundle) -> None:
    # Given versions whose bundle unpickles to a dict, and to a bundle with a wrong part
    reg = registry(tmp_path)
    v1, v2 = reg.publish(small_bundle), reg.publish(small_bundle)
    buf = tmp_path / "x.joblib"
    joblib.dump({"not": "a bundle"}, buf)
    reseal(reg, v1, buf.read_bytes())
    broken = pickle.loads(pickle.dumps(small_bundle))
    broken.mixture = "a string"
    joblib.dump(broken, buf)
    reseal(reg, v2, buf.read_bytes())
    # When they are loaded / Then each is refused naming what it is
    with pytest.raises(ModelIntegrityError, match="is a dict, not a ModelBundle") as e1:
        reg.load(v1)
    with pytest.raises(ModelIntegrityError, match=r"bundle\.mixture is a str") as e2:
        reg.load(v2)
    assert e1.value.check == e2.value.check == "type"


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_writer_cleans_stale_staging_but_not_fresh_or_locked(tmp_path: Path, small_bundle) -> None:
    # Given leftovers of dead writers (old), a fresh staging dir, and an old one still locked
    reg = registry(tmp_path)
    reg.publish(small_bundle)
    dead = reg.versions_dir / ".staging-dead"
    dead.mkdir()
    (dead / BUNDLE_FILE).write_bytes(b"half")
    tmp_current = tmp_path / ".CURRENT.deadbeef.tmp"
    tmp_current.write_text("x")
    fresh = reg.versions_dir / ".staging-fresh"
    fresh.mkdir()
    live = reg.versions_dir / ".staging-live"
    live.mkdir()
    for p in (dead, tmp_current, live):
        age(p, STALE_STAGING_S + 60)
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    store.fcntl.flock(fd, store.fcntl.LOCK_EX)
    try:
        # When a writer publishes
        reg.publish(small_bundle)
        # Then the dead leftovers are gone; the fresh and the locked ones stay
        assert not dead.exists() and not tmp_current.exists()
        assert fresh.is_dir() and live.is_dir()
    finally:
        os.close(fd)
    # ...and once unlocked (its writer died), the next writer removes it
    reg.prune()
    assert not live.exists()


def test_publish_in_progress_is_never_cleaned(tmp_path: Path, small_bundle, monkeypatch) -> None:
    # Given a publish paused inside its staging directory (as if slow), made to look old
    reg = registry(tmp_path)
    reg.publish(small_bundle)
    paused, resume = threading.Event(), threading.Event()
    real_dump = store.joblib.dump

    def slow_dump(obj, path, *a, **k):
        out = real_dump(obj, path, *a, **k)
        age(Path(path).parent, STALE_STAGING_S + 60)
        paused.set()
        resume.wait(10)
        return out

    monkeypatch.setattr(store.joblib, "dump", slow_dump)
    result: list[str] = []
    writer = threading.Thread(target=lambda: result.append(reg.publish(small_bundle)))
    writer.start()
    assert paused.wait(10)
    # When another writer cleans meanwhile
    removed = registry(tmp_path).clean_stale()
    resume.set()
    writer.join(10)
    # Then the live staging directory was left alone and the publish completed
    assert removed == []
    assert result and registry(tmp_path).verify(result[0])
