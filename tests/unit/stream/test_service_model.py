"""The service's model loading: registry faults are refusals; scoring goes on, logs say it once.

Drives the loading calls of ``DetectorService`` directly (no broker: the session part is
tested against the real broker in tests/integration/test_registry_faults.py).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from detector.metrics import current
from detector.registry.store import BUNDLE_FILE, ModelRegistry
from detector.settings import load_settings
from detector.stream.service import DetectorService
from tests.unit.registry.test_faults import reseal


def make_service(models: Path) -> DetectorService:
    settings = load_settings(
        overrides={"registry": {"path": str(models)}, "service": {"reload_interval_s": 0}},
        environ={},
    )
    return DetectorService(settings)


def reload_now(service: DetectorService, times: int = 3) -> None:
    for _ in range(times):
        service.models.reload_due_now()
        service.models.maybe_reload()


def refused(service: DetectorService) -> float:
    return current(service.metrics.model_reloads.labels("refused"))


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_starting_with_an_unreadable_registry_waits_not_ready_logging_once(
    tmp_path: Path, small_bundle, caplog
) -> None:
    # Given a registry path that cannot be read (a file where the directory should be)
    models = tmp_path / "models"
    models.write_text("not a directory")
    service = make_service(models)
    caplog.set_level(logging.INFO, logger="detector.stream.models")
    # When the service tries to load its first model, again and again
    loaded = [service.models.load_initial() for _ in range(5)]
    # Then it is not ready, says why once, and never raises
    assert loaded == [False] * 5
    ready, why = service.health.ready()
    assert not ready and why.startswith("no model loaded") and "cannot read" in why
    assert "cannot read" in service.health.reason
    assert len(errors(caplog)) == 1
    assert "no usable model yet" in errors(caplog)[0] and "cannot read" in errors(caplog)[0]
    # ...and once a model is there it loads and says so
    models.unlink()
    ModelRegistry(service.settings.registry).publish(small_bundle)
    assert service.models.load_initial() is True
    assert service.scorer is not None
    assert any("usable again" in r.getMessage() for r in caplog.records)


def test_starting_with_a_truncated_current_waits(tmp_path: Path, small_bundle, caplog) -> None:
    # Given CURRENT naming a truncated bundle whose manifest sha matches it
    reg = ModelRegistry(make_service(tmp_path).settings.registry)
    v = reg.publish(small_bundle)
    data = (reg.versions_dir / v / BUNDLE_FILE).read_bytes()
    reseal(reg, v, data[:1000])
    service = make_service(tmp_path)
    caplog.set_level(logging.INFO, logger="detector.stream.models")
    # When it starts / Then it waits without a traceback, logging the refusal once
    assert [service.models.load_initial() for _ in range(3)] == [False] * 3
    assert len(errors(caplog)) == 1 and "does not load" in errors(caplog)[0]


def test_registry_faults_during_reload_keep_the_model_and_count_one_refusal_each(
    tmp_path: Path, small_bundle, caplog
) -> None:
    # Given a service scoring with version 1
    reg = ModelRegistry(make_service(tmp_path).settings.registry)
    v1 = reg.publish(small_bundle)
    service = make_service(tmp_path)
    assert service.models.load_initial()
    caplog.set_level(logging.INFO, logger="detector.stream.models")
    # When CURRENT becomes a directory, checked several times
    (tmp_path / "CURRENT").unlink()
    (tmp_path / "CURRENT").mkdir()
    reload_now(service)
    # Then it keeps version 1, counts one refusal and logs one error
    assert service.scorer is not None and service.scorer.version == v1
    assert refused(service) == 1 and len(errors(caplog)) == 1
    assert "CURRENT is a directory" in errors(caplog)[0] and v1 in errors(caplog)[0]
    # When CURRENT then names a truncated bundle (checksum made for the truncated bytes)
    v2 = reg.publish(small_bundle, promote=False)
    data = (reg.versions_dir / v2 / BUNDLE_FILE).read_bytes()
    reseal(reg, v2, data[: len(data) // 3])
    shutil.rmtree(tmp_path / "CURRENT")
    (tmp_path / "CURRENT").write_text(v2 + "\n")
    reload_now(service)
    # Then that version is refused once, and version 1 still scores
    assert service.scorer.version == v1
    assert refused(service) == 2 and len(errors(caplog)) == 2
    assert f"model {v2} refused, still scoring with {v1}" in errors(caplog)[1]
    # When a good version is promoted / Then it is loaded
    v3 = reg.publish(small_bundle)
    reload_now(service)
    assert service.scorer.version == v3
    assert current(service.metrics.model_reloads.labels("loaded")) == 1


def test_detector_run_with_an_unreadable_registry_waits_with_one_line(tmp_path: Path) -> None:
    # Given `detector run` pointed at a registry it cannot read (and no broker needed yet)
    import os
    import signal
    import subprocess
    import sys
    import time

    models = tmp_path / "models"
    models.write_text("not a directory")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[3]),
        "DETECTOR_REGISTRY__PATH": str(models),
        "DETECTOR_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "DETECTOR_SERVICE__METRICS_PORT": "0",
        "DETECTOR_SERVICE__RELOAD_INTERVAL_S": "0.2",
    }
    log = tmp_path / "run.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "detector", "run"], env=env, stdout=fh, stderr=subprocess.STDOUT
        )
    # When it has been waiting for a while after its first attempt (a retry each second)
    deadline = time.monotonic() + 60
    while "no usable model" not in log.read_text() and proc.poll() is None:
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    output = log.read_text()
    # Then it neither crashed nor repeated itself: one clear line, a clean exit
    assert "Traceback" not in output
    assert output.count("no usable model yet") == 1, output
    assert "cannot read" in output
    assert proc.returncode == 0
