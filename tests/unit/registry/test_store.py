"""The registry: atomic versions, verification before unpickling, promote/rollback/prune."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

import detector.registry.store as store
from detector.errors import ModelIntegrityError, RegistryError
from detector.model.scorer import Scorer
from detector.registry.store import BUNDLE_FILE, SIGNATURE_FILE, ModelRegistry
from detector.settings import RegistrySettings
from tests.unit.conftest import as_rows, mixture_sample


def registry(path: Path, key: str | None = None, keep: int = 10) -> ModelRegistry:
    return ModelRegistry(
        RegistrySettings(path=path, signing_key=SecretStr(key) if key else None, keep_versions=keep)
    )


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_save_load_round_trip_gives_identical_scores(tmp_path: Path, small_bundle) -> None:
    # Given a published bundle
    reg = registry(tmp_path)
    version = reg.publish(small_bundle)
    # When it is loaded back
    loaded = reg.load()
    # Then it is CURRENT and scores every row exactly as before
    assert reg.current() == version == loaded.version
    rows = as_rows(mixture_sample(500, seed=20))
    np.testing.assert_array_equal(
        Scorer(loaded).score(rows).log_likelihood, Scorer(small_bundle).score(rows).log_likelihood
    )


def test_flipped_byte_is_refused_before_unpickling_and_current_stays(
    tmp_path: Path, small_bundle, monkeypatch
) -> None:
    # Given a good CURRENT version and a second version whose bundle lost integrity on disk
    reg = registry(tmp_path)
    good = reg.publish(small_bundle)
    bad = reg.publish(small_bundle, promote=False)
    flip_a_byte(reg.versions_dir / bad / BUNDLE_FILE)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a bundle that failed a check was unpickled")

    monkeypatch.setattr(store.joblib, "load", no_unpickling)
    # When it is loaded or promoted
    with pytest.raises(ModelIntegrityError) as err:
        reg.load(bad)
    assert err.value.check == "checksum"
    with pytest.raises(ModelIntegrityError):
        reg.promote(bad)
    # Then CURRENT did not move
    assert reg.current() == good


def test_signature_missing_or_made_with_another_key_is_refused(
    tmp_path: Path, small_bundle, monkeypatch
) -> None:
    # Given a registry that signs with a key
    signed = registry(tmp_path, key="s3cret")
    first = signed.publish(small_bundle)
    second = signed.publish(small_bundle, promote=False)
    monkeypatch.setattr(store.joblib, "load", lambda *a, **k: pytest.fail("unpickled"))
    # When the signature file is missing
    (signed.versions_dir / second / SIGNATURE_FILE).unlink()
    with pytest.raises(ModelIntegrityError) as missing:
        signed.load(second)
    assert missing.value.check == "signature" and "no manifest.sig" in str(missing.value)
    # ...or the reader holds a different key
    with pytest.raises(ModelIntegrityError) as wrong:
        registry(tmp_path, key="other").load(first)
    assert wrong.value.check == "signature"
    # ...or an unsigned version is loaded where a key is required
    unsigned = registry(tmp_path / "plain").publish(small_bundle)
    with pytest.raises(ModelIntegrityError):
        registry(tmp_path / "plain", key="s3cret").load(unsigned)
    # Then promotion is refused too, and CURRENT stays where it was
    with pytest.raises(ModelIntegrityError):
        signed.promote(second)
    assert signed.current() == first


def test_changed_manifest_breaks_the_signature(tmp_path: Path, small_bundle) -> None:
    reg = registry(tmp_path, key="k")
    v = reg.publish(small_bundle)
    manifest = reg.versions_dir / v / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format": 1', '"format": 2'))
    with pytest.raises(ModelIntegrityError) as err:
        reg.verify(v)
    assert err.value.check == "signature"


def test_library_mismatch_warns_or_refuses(tmp_path: Path, small_bundle) -> None:
    reg = registry(tmp_path)
    v = reg.publish(small_bundle)
    manifest = reg.versions_dir / v / "manifest.json"
    manifest.write_text(
        manifest.read_text().replace(store.library_versions()["scikit-learn"], "0.0.1")
    )
    assert reg.load(v).version == v  # default: warn and load
    strict = ModelRegistry(RegistrySettings(path=tmp_path, on_library_mismatch="refuse"))
    with pytest.raises(ModelIntegrityError) as err:
        strict.load(v)
    assert err.value.check == "library_version"


def test_promote_rollback_and_prune_keep_current_intact(tmp_path: Path, small_bundle) -> None:
    reg = registry(tmp_path, keep=2)
    v1 = reg.publish(small_bundle)
    v2 = reg.publish(small_bundle)
    assert reg.current() == v2
    assert reg.rollback() == v1 and reg.current() == v1
    v3 = reg.publish(small_bundle, promote=False)
    # keep 2: the oldest goes, but never CURRENT (v1)
    names = [i.version for i in reg.list()]
    assert v1 in names and v3 in names and reg.current() == v1
    reg.promote(v3)
    v4 = reg.publish(small_bundle)
    assert reg.current() == v4
    assert [i.version for i in reg.list()][-1] == v4
    assert len(reg.list()) <= 3


def test_rejected_versions_are_not_promoted_without_force(tmp_path: Path, small_bundle) -> None:
    reg = registry(tmp_path)
    good = reg.publish(small_bundle)
    rejected = reg.publish(small_bundle, rejected_reason="alert rate 9% on the holdout")
    assert reg.current() == good
    with pytest.raises(RegistryError, match="rejected"):
        reg.promote(rejected)
    reg.promote(rejected, force=True)
    assert reg.current() == rejected


def test_concurrent_publishes_make_distinct_complete_versions(tmp_path: Path, small_bundle) -> None:
    reg = registry(tmp_path)
    out: list[str] = []
    threads = [
        threading.Thread(target=lambda: out.append(reg.publish(small_bundle))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == 4
    for v in out:
        reg.verify(v)
    assert reg.current() in out
    assert not list(reg.versions_dir.glob(".staging-*"))


def test_no_current_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no CURRENT model"):
        registry(tmp_path).load()
