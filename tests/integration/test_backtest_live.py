"""The backtest's alerts equal the live service's for the same events and model version.

One labelled CSV goes both ways: `detector produce` -> `detector run` (a real process on a
real broker, the model fixed, no retrainer) -> the alerts topic; and `detector backtest
--model current --no-retrain --alerts`. The two sets of alerts must match on id, entity,
severity, log-likelihood and model version, with the per-entity cooldown on. The same history read back from the input topic
(`detector backtest --topic`) gives them too.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from detector.events import format_time_ms
from detector.stream.broker import LocalBroker
from tests.integration.streams import FEATURES, normal_rows

pytestmark = pytest.mark.broker

N_TRAIN = 2000
N_TEST = 600
ENTITIES = 4


def write_csv(path: Path, n: int, seed: int, anomalous: set[int], base_ms: int) -> None:
    x = normal_rows(n, seed)
    for i in anomalous:
        x[i, 1] += 8 * 0.05
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "entity", *FEATURES, "label"])
        for i, row in enumerate(x.tolist()):
            # Four entities reading every second each, in time order (the stream order).
            ts = format_time_ms(base_ms + 1000.0 * (i // ENTITIES))
            w.writerow([ts, f"pump-{i % ENTITIES}", *row, int(i in anomalous)])


def detector(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "detector", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def essentials(alert: dict[str, object]) -> tuple[object, ...]:
    ll = alert["log_likelihood"]
    assert isinstance(ll, float)
    return (
        alert["alert_id"],
        alert["entity"],
        alert["severity"],
        round(ll, 8),
        alert["model_version"],
        alert["event_time"],
        alert["suppressed_count"],
    )


# The level-invariant temporal forms (issue 20): per-entity state both ways.
LEVEL_INVARIANT = {
    "DETECTOR_FEATURES__TEMPORAL": orjson.dumps(dict.fromkeys(FEATURES, 10)).decode(),
    "DETECTOR_FEATURES__TEMPORAL_FORMS": '["diff", "std", "dev"]',
    "DETECTOR_FEATURES__TEMPORAL_RAW": "false",
}


@pytest.mark.parametrize("features", [{}, LEVEL_INVARIANT], ids=["raw", "level_invariant"])
def test_backtest_alerts_equal_the_live_services_for_the_same_events(
    broker: LocalBroker, tmp_path: Path, features: dict[str, str]
) -> None:
    # Given a trained model and a labelled test file, its anomalies in bursts per entity
    base_ms = int(time.time() * 1000) - 3_600_000
    write_csv(tmp_path / "train.csv", N_TRAIN, 1, set(), base_ms - 10_000_000)
    anomalous = {i for start in range(40, N_TEST, 97) for i in range(start, start + 12, ENTITIES)}
    write_csv(tmp_path / "test.csv", N_TEST, 2, anomalous, base_ms)
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
        # Repeats of an entity within 5 s of event time are counted, not sent: both ways.
        "DETECTOR_SERVICE__ALERT_COOLDOWN_S": "5",
        "DETECTOR_TRAINING__N_JOBS": "1",
        "DETECTOR_MODEL__N_COMPONENTS_MAX": "3",
        **features,
    }
    trained = detector(env, "train", str(tmp_path / "train.csv"), "--label-column", "label")
    assert trained.returncode == 0, trained.stderr

    # When the file is streamed through the live service
    service = subprocess.Popen(
        [sys.executable, "-m", "detector", "run", "--max-events", str(N_TEST)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        sent = detector(env, "produce", str(tmp_path / "test.csv"), "--label-column", "label")
        assert sent.returncode == 0, sent.stderr
        assert service.wait(timeout=120) == 0
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
    read = detector(env, "consume", topics["ALERTS_TOPIC"], "--from-beginning", "--timeout-s", "3")
    assert read.returncode == 0, read.stderr
    live = [orjson.loads(line) for line in read.stdout.splitlines()]

    # and backtested with the same model version, no retraining
    out = tmp_path / "backtest-alerts.jsonl"
    backtested = detector(
        env,
        "backtest",
        str(tmp_path / "test.csv"),
        "--label-column",
        "label",
        "--model",
        "current",
        "--no-retrain",
        "--alerts",
        str(out),
        "--json",
        str(tmp_path / "backtest.json"),
        "-q",
    )
    assert backtested.returncode == 0, backtested.stderr
    replayed = [orjson.loads(line) for line in out.read_text().splitlines()]

    # Then both raised the same alerts: ids, entities, severities, scores, version, cooldown
    assert live, "the live service raised no alert: the test would show nothing"
    assert any(a["suppressed_count"] for a in live), "the cooldown held nothing back"
    assert sorted(map(essentials, replayed)) == sorted(map(essentials, live))
    summary = orjson.loads((tmp_path / "backtest.json").read_bytes())
    assert summary["overall"]["alerts"] == len(live)
    assert summary["retrains"] == []

    # When the same history is backtested straight from the input topic
    from_topic = tmp_path / "topic-alerts.jsonl"
    again = detector(
        env,
        "backtest",
        "--topic",
        topics["INPUT_TOPIC"],
        "--model",
        "current",
        "--no-retrain",
        "--alerts",
        str(from_topic),
        "-q",
    )
    assert again.returncode == 0, again.stderr
    # Then its alerts are the live ones too, source coordinates included
    replayed = [orjson.loads(line) for line in from_topic.read_text().splitlines()]
    assert sorted(map(essentials, replayed)) == sorted(map(essentials, live))
    assert sorted(a["source"]["timestamp_ms"] for a in replayed) == sorted(
        a["source"]["timestamp_ms"] for a in live
    )
