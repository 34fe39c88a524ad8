"""Registry faults while the service runs on the real broker: refused, counted, scoring goes on.

CURRENT is replaced by a directory, then by the name of a truncated bundle whose manifest
sha256 matches it (the bytes pass every check before unpickling, then do not unpickle).
Before the fix the first ended the Kafka session in a loop (~5 events/s) and the second
crashed the reload; now each is one refusal and the throughput stays that of a healthy
registry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from detector.metrics import current
from detector.registry.store import BUNDLE_FILE, MANIFEST_FILE, ModelRegistry
from tests.integration.streams import (
    alerts_of,
    events_with_anomalies,
    produce,
    service_thread,
    settings_for_test,
    train_and_publish,
    wait_for,
)

PHASE_EVENTS = 10_000


def truncated_version(registry: ModelRegistry, source: str) -> str:
    """A copy of ``source`` whose bundle is cut in half and whose manifest sha matches that."""
    version = registry.publish(registry.load(source), promote=False)
    d = registry.versions_dir / version
    data = (d / BUNDLE_FILE).read_bytes()[: (d / BUNDLE_FILE).stat().st_size // 2]
    (d / BUNDLE_FILE).write_bytes(data)
    manifest = json.loads((d / MANIFEST_FILE).read_text())
    manifest["sha256"] = hashlib.sha256(data).hexdigest()
    (d / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    registry.verify(version)  # it passes every check made before unpickling
    return version


def session_ends(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The service's one line per ended Kafka session, as logged."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "detector.stream.service" and "session ended" in r.getMessage()
    ]


def test_current_as_directory_then_truncated_bundle_keeps_scoring(
    broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a service scoring with version 1, warmed up (group joined)
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    v1 = train_and_publish(settings, seed=0)
    registry = ModelRegistry(settings.registry)
    topic = settings.kafka.input_topic
    truncated = truncated_version(registry, v1)
    rates: dict[str, float] = {}
    with service_thread(settings) as service:
        warmup, _ = events_with_anomalies(2_000, seed=20)
        produce(broker.bootstrap_servers, topic, warmup)
        wait_for(lambda: service.consumed >= 2_000, 60, "warm-up")

        def phase(name: str, seed: int) -> None:
            raws, _ = events_with_anomalies(PHASE_EVENTS, seed=seed)
            target = service.consumed + PHASE_EVENTS
            started = time.monotonic()
            produce(broker.bootstrap_servers, topic, raws)
            wait_for(lambda: service.consumed >= target, 120, f"{name} events")
            rates[name] = PHASE_EVENTS / (time.monotonic() - started)

        def refused() -> float:
            return current(service.metrics.model_reloads.labels("refused"))

        phase("healthy", seed=21)
        # When CURRENT is replaced by a directory
        (registry.root / "CURRENT").unlink()
        (registry.root / "CURRENT").mkdir()
        wait_for(lambda: refused() >= 1, 30, "refusal of CURRENT as a directory")
        phase("current_is_a_directory", seed=22)
        # ...and then names a truncated bundle whose checksum matches
        shutil.rmtree(registry.root / "CURRENT")
        (registry.root / "CURRENT").write_text(truncated + "\n")
        wait_for(lambda: refused() >= 2, 30, "refusal of the truncated bundle")
        phase("truncated_bundle", seed=23)
        wait_for(lambda: not service.offsets.pending, 30, "sends acknowledged")
        broker_errors = current(service.metrics.broker_errors)
        scored = current(service.metrics.events.labels("scored"))
    # Then every event was scored with version 1, in one Kafka session, at a healthy rate
    total = 2_000 + 3 * PHASE_EVENTS
    assert scored == total
    # ...and no Kafka session ended because of the registry (before the fix, CURRENT as a
    # directory raised IsADirectoryError, an OSError, which ended the session in a loop). A
    # session the Kafka client itself ended (the fetch process reporting its error) is
    # counted too, and must name a Kafka-side cause, never the registry.
    ends = session_ends(caplog)
    assert broker_errors == len(ends), ends
    for line in ends:
        assert str(registry.root) not in line and "IsADirectoryError" not in line, line
        assert "FetcherError" in line or "Kafka" in line.split("(", 1)[1], line
    if ends:
        print(f"\nKafka sessions ended by the client, not the registry: {ends}")
    assert service.scorer is not None and service.scorer.version == v1
    assert refused() == 2
    assert current(service.metrics.model_reloads.labels("loaded")) == 0
    # The broken session loop ran at ~5 events/s; a third of the healthy rate is noise margin.
    for name in ("current_is_a_directory", "truncated_bundle"):
        assert rates[name] > rates["healthy"] / 3, rates
    alerts = alerts_of(broker.bootstrap_servers, settings.kafka.alerts_topic)
    assert alerts and {a["model_version"] for a in alerts} == {v1}
    print(f"\nthroughput by phase (events/s): { ({k: round(v) for k, v in rates.items()}) }")
