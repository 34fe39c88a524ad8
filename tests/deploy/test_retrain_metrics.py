"""The CronJob's path end to end: `detector retrain --once --push-gateway URL` on the real
broker pushes the run's outcome where Prometheus reads it (a stand-in gateway here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.retrain.test_exporter import gateway  # noqa: F401  (fixture)

pytestmark = pytest.mark.broker


def test_a_cron_run_pushes_its_outcome(
    broker: object,
    gateway: tuple[str, list[tuple[str, str, bytes]]],  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.integration.streams import env_for, settings_for_test, train_and_publish

    url, received = gateway
    # Given a registry with a model and an empty samples topic (too few samples: refused)
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")  # type: ignore[attr-defined]
    train_and_publish(settings, n=3000)
    broker.create_topics([settings.kafka.samples_topic], partitions=1)  # type: ignore[attr-defined]
    env = env_for(settings) | {"DETECTOR_RETRAIN__POLL_TIMEOUT_S": "1"}
    # When the CronJob's command line runs
    r = subprocess.run(
        [sys.executable, "-m", "detector", "retrain", "--once", "--push-gateway", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.getcwd(),
    )
    # Then the run's outcome reached the gateway under the job the alert rules read
    assert r.returncode == 0, r.stdout + r.stderr
    [(method, path, body)] = received
    assert method == "PUT" and path.endswith("/job/detector-retrain-cron")
    assert b'detector_retrain_runs_total{outcome="refused"} 1.0' in body
