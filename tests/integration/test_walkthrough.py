"""The README's five-minute walk-through, command by command, on a real broker.

CSV -> `detector train` -> `detector evaluate --report` -> `detector produce --print`
-> `detector run` -> `detector produce` -> `detector consume`: what a new user types, as
real processes configured from the environment, asserting what each one shows them.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from detector.stream.broker import LocalBroker
from tests.integration.streams import FEATURES, normal_rows

pytestmark = pytest.mark.broker

N_TRAIN = 3000
N_TEST = 400
ANOMALY_EVERY = 40  # 10 anomalies in the test file, 8 standard deviations out on vibration


def write_csv(path: Path, x: np.ndarray, labels: list[int]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["entity", *FEATURES, "label"])
        for i, (row, label) in enumerate(zip(x.tolist(), labels, strict=True)):
            w.writerow([f"pump-{i % 5:02d}", *row, label])


def detector(
    env: dict[str, str], *args: str, timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "detector", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_walkthrough_from_a_csv_to_alerts_on_a_topic(
    broker: LocalBroker, make_topic: object, tmp_path: Path
) -> None:
    # Given a user's CSV of normal rows and a labelled test file with a few anomalies
    train_x = normal_rows(N_TRAIN, seed=1)
    write_csv(tmp_path / "my-train.csv", train_x, [0] * N_TRAIN)
    test_x = normal_rows(N_TEST, seed=2)
    anomalous = list(range(ANOMALY_EVERY // 2, N_TEST, ANOMALY_EVERY))
    test_x[anomalous, 1] += 8 * 0.05
    labels = [1 if i in anomalous else 0 for i in range(N_TEST)]
    write_csv(tmp_path / "my-test.csv", test_x, labels)
    tag = os.urandom(4).hex()
    topics = {
        "INPUT_TOPIC": f"events-{tag}",
        "ALERTS_TOPIC": f"alerts-{tag}",
        "DEAD_LETTER_TOPIC": f"dead-{tag}",
        "SAMPLES_TOPIC": f"samples-{tag}",
        "DRIFT_TOPIC": f"drift-{tag}",
    }
    broker.create_topics(list(topics.values()), partitions=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    env |= {f"DETECTOR_KAFKA__{k}": v for k, v in topics.items()}
    env |= {
        "DETECTOR_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "DETECTOR_KAFKA__GROUP_ID": f"g-{tag}",
        "DETECTOR_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "DETECTOR_REGISTRY__PATH": str(tmp_path / "models"),
        "DETECTOR_SERVICE__METRICS_PORT": "0",
        "DETECTOR_TRAINING__N_JOBS": "1",
        "DETECTOR_MODEL__N_COMPONENTS_MAX": "3",
    }
    os.chdir(tmp_path)

    # When they train, then evaluate with a report
    trained = detector(env, "train", "my-train.csv", "--label-column", "label")
    assert trained.returncode == 0, trained.stderr
    # Then training says how it used each column and what it published
    shown = trained.stdout + trained.stderr
    for name in FEATURES:
        assert name in shown
    assert "numeric" in shown
    evaluated = detector(
        env, "evaluate", "my-test.csv", "--label-column", "label", "--report", "report.html"
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert "AUROC" in evaluated.stdout
    assert (tmp_path / "report.html").stat().st_size > 10_000

    # When they print the event format for those columns
    printed = detector(
        env, "produce", "my-test.csv", "--label-column", "label", "--print", "-n", "2"
    )
    assert printed.returncode == 0, printed.stderr
    events = [orjson.loads(line) for line in printed.stdout.splitlines()]
    # Then each is an event with the entity, a time and the features (not the label) under values
    assert len(events) == 2
    assert events[0]["entity"] == "pump-00" and set(events[0]["values"]) == set(FEATURES)
    assert "ts" in events[0]

    # When they run the service, send the test file and read the alerts
    service = subprocess.Popen(
        [sys.executable, "-m", "detector", "run", "--max-events", str(N_TEST)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sent = detector(env, "produce", "my-test.csv", "--label-column", "label")
        assert sent.returncode == 0, sent.stderr
        assert f"sent {N_TEST} events" in sent.stderr
        assert service.wait(timeout=120) == 0
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
    read = detector(env, "consume", topics["ALERTS_TOPIC"], "--from-beginning", "--timeout-s", "3")
    assert read.returncode == 0, read.stderr

    # Then the alerts name the anomalous events' entities, and most anomalies alerted
    alerts = [orjson.loads(line) for line in read.stdout.splitlines()]
    alerted_offsets = {a["source"]["offset"] for a in alerts}
    caught = len(alerted_offsets & set(anomalous))
    assert caught >= 0.8 * len(anomalous), (caught, sorted(alerted_offsets))
    assert all(a["log_likelihood"] < a["threshold"] for a in alerts)
    assert f"{len(alerts)} records from" in read.stderr
