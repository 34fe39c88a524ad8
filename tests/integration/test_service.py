"""The service against a real broker (Apache Kafka or Tansu, see conftest.py): issue 4."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from detector.metrics import current
from detector.registry.store import BUNDLE_FILE, ModelRegistry, _atomic_write
from detector.stream.alerts import (
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
    alert_id,
)
from tests.integration.streams import (
    alerts_of,
    committed_total,
    events_with_anomalies,
    offline_alert_ids,
    produce,
    read_topic,
    service_thread,
    settings_for_test,
    start_service_process,
    train_and_publish,
    wait_for,
)
from tests.kafka_client import client_of_run

pytestmark = pytest.mark.broker

ALERT_SCHEMA = json.loads(
    resources.files("detector").joinpath("schemas/alert.schema.json").read_text()
)


@pytest.mark.parametrize(
    "fetch_process",
    [
        pytest.param(
            True,
            marks=pytest.mark.needs_client(
                "kafka-python",
                reason="the fetch process is kafka-python's (librdkafka fetches "
                "in C on its own threads)",
            ),
        ),
        False,
    ],
    ids=["fetch-process", "in-process"],
)
def test_alert_ids_equal_offline_scoring(broker, tmp_path: Path, fetch_process: bool) -> None:
    # Given a model and 20,000 events with an injected anomaly every 100 events on 3
    # partitions, consumed by the run's Kafka client: kafka-python in a fetch process (the
    # default) or in the service's own process, or confluent-kafka
    settings = settings_for_test(
        broker.bootstrap_servers, tmp_path / "models", service={"fetch_process": fetch_process}
    )
    train_and_publish(settings)
    broker.create_topics([settings.kafka.input_topic], partitions=3)
    raws, anomalous = events_with_anomalies(20_000, seed=1)
    produced = produce(broker.bootstrap_servers, settings.kafka.input_topic, raws)

    # When the service consumes them all
    with service_thread(settings, max_events=len(raws)) as service:
        wait_for(lambda: service.consumed >= len(raws), 120, "all events consumed")
    alerts = alerts_of(broker.bootstrap_servers, settings.kafka.alerts_topic)

    # Then its alert ids are exactly the ones offline `detector score` gives
    expected = offline_alert_ids(tmp_path, settings, raws, produced)
    topic = settings.kafka.input_topic
    got = {a["alert_id"] for a in alerts}
    assert got == expected
    # ...every injected anomaly is among them, the rate on the rest is near 1%,
    injected = {alert_id(topic, produced[i].partition, produced[i].offset) for i in anomalous}
    assert injected <= got
    assert 0.005 < (len(got) - len(injected)) / (len(raws) - len(injected)) < 0.02
    # ...every alert follows the published JSON Schema, and the counters add up.
    for a in alerts:
        jsonschema.validate(a, ALERT_SCHEMA)
    m = service.metrics
    consumed = current(m.consumed)
    scored = current(m.events.labels("scored"))
    dead = current(m.events.labels("dead_lettered"))
    assert consumed == scored + dead == len(raws)
    # ...and the run's Kafka client did the consuming
    transport = {
        ("kafka-python", True): "ProcessFetcher",
        ("kafka-python", False): "ConsumerFetcher",
        ("confluent", False): "ConfluentFetcher",
    }[(client_of_run(), fetch_process)]
    assert current(m.kafka_client_info.labels(client_of_run(), transport)) == 1


BAD_RECORDS: dict[str, tuple[bytes, str | None]] = {
    # name: (exact bytes, expected dead-letter reason or None when it must be scored)
    "not_json": (b"this is not json {", "invalid_json"),
    "json_array": (b"[1, 2, 3]", "not_an_object"),
    "values_not_object": (b'{"entity": "p1", "values": [1, 2]}', "not_an_object"),
    "no_values": (b'{"entity": "p1", "ts": 1795000000000}', "missing_features"),
    "all_features_missing": (b'{"entity": "p1", "values": {"other": 1.0}}', "missing_features"),
    "string_for_number": (
        b'{"entity": "p1", "values": {"temp": "hot", "vibration": 0.3, "pressure": 4.0, "flow": 120}}',
        "bad_value",
    ),
    "nan_literal": (
        b'{"entity": "p1", "values": {"temp": NaN, "vibration": 0.3, "pressure": 4, "flow": 1}}',
        "invalid_json",
    ),
    "overflow_to_inf": (
        b'{"entity": "p1", "values": {"temp": 1e400, "vibration": 0.3, "pressure": 4, "flow": 1}}',
        "invalid_json",
    ),
    "bad_timestamp": (
        b'{"entity": "p1", "ts": "yesterday", "values": {"temp": 60, "vibration": 0.3, "pressure": 4, "flow": 120}}',
        "bad_value",
    ),
    "oversize": (
        b'{"entity": "p1", "pad": "' + b"x" * 5000 + b'", "values": {"temp": 60}}',
        "too_large",
    ),
    "empty": (b"", "empty"),
    # Scored, not dead-lettered: a huge but finite reading is the most anomalous event there is,
    "huge_number": (
        b'{"entity": "p1", "values": {"temp": 1e300, "vibration": 0.3, "pressure": 4.0, "flow": 120}}',
        None,
    ),
    # ...and a missing feature is marginalized (the default policy).
    "one_missing": (
        b'{"entity": "p1", "values": {"temp": 60.0, "vibration": 0.3, "pressure": 4.0}}',
        None,
    ),
}


def test_every_bad_input_class_becomes_a_dead_letter(broker, tmp_path: Path) -> None:
    # Given a running service with a 4 KiB record limit
    settings = settings_for_test(
        broker.bootstrap_servers, tmp_path / "models", event={"max_record_bytes": 4096}
    )
    train_and_publish(settings)
    names = list(BAD_RECORDS)
    good, _ = events_with_anomalies(200, seed=3)
    payload = [BAD_RECORDS[n][0] for n in names] + good
    # When one record of every bad-input class arrives, followed by good events
    produced = produce(broker.bootstrap_servers, settings.kafka.input_topic, payload, key=b"k1")
    with service_thread(settings) as service:
        wait_for(lambda: service.consumed >= len(payload), 90, "all records consumed")
        wait_for(lambda: not service.offsets.pending, 30, "sends acknowledged")

    # Then each bad record is a dead letter with its exact bytes, key, reason and source
    expected_dead = {n: BAD_RECORDS[n] for n in names if BAD_RECORDS[n][1] is not None}
    dead = read_topic(
        broker.bootstrap_servers, settings.kafka.dead_letter_topic, expect=len(expected_dead)
    )
    by_offset = {}
    for rec in dead:
        headers = dict(rec.headers)
        assert headers[SOURCE_TOPIC_HEADER].decode() == settings.kafka.input_topic
        by_offset[(int(headers[SOURCE_PARTITION_HEADER]), int(headers[SOURCE_OFFSET_HEADER]))] = rec
    for i, name in enumerate(names):
        raw, reason = BAD_RECORDS[name]
        pos = (produced[i].partition, produced[i].offset)
        if reason is None:
            assert pos not in by_offset, f"{name} should have been scored"
            continue
        assert pos in by_offset, f"{name} was not dead-lettered"
        rec = by_offset[pos]
        assert rec.value == raw or (raw == b"" and not rec.value), name
        assert rec.key == b"k1"
        assert dict(rec.headers)[REASON_HEADER].decode() == reason, name
    assert len(dead) == len(expected_dead)
    # ...the huge reading alerted as critical, and the service kept running through all of it
    alerts = alerts_of(broker.bootstrap_servers, settings.kafka.alerts_topic)
    huge = names.index("huge_number")
    huge_id = alert_id(settings.kafka.input_topic, produced[huge].partition, produced[huge].offset)
    assert any(a["alert_id"] == huge_id and a["severity"] == "critical" for a in alerts)
    m = service.metrics
    assert current(m.consumed) == current(m.events.labels("scored")) + current(
        m.events.labels("dead_lettered")
    )
    assert current(m.events.labels("dead_lettered")) == len(expected_dead)


def test_sigkill_mid_stream_loses_nothing(broker, tmp_path: Path) -> None:
    # Given a `detector run` process configured by env alone, reading 3 partitions
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    broker.create_topics([topic], partitions=3)
    raws, anomalous = events_with_anomalies(30_000, seed=5)
    log = tmp_path / "service.log"
    proc = start_service_process(settings, log)
    produced = produce(broker.bootstrap_servers, topic, raws[:5_000])
    wait_for(
        lambda: committed_total(broker.bootstrap_servers, settings.kafka.group_id, topic) > 0,
        60,
        "first commit",
    )
    # When events keep arriving at ~5,000/s and the process is killed with SIGKILL mid-stream
    rest: list = []

    def feed() -> None:
        for i in range(5_000, len(raws), 500):
            rest.extend(produce(broker.bootstrap_servers, topic, raws[i : i + 500]))
            time.sleep(0.1)

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(1.5)
    proc.kill()
    proc.wait(10)
    committed_at_kill = committed_total(broker.bootstrap_servers, settings.kafka.group_id, topic)
    feeder.join(120)
    produced += rest
    assert 0 < committed_at_kill < len(raws)
    # ...and started again until it has been idle
    proc = start_service_process(settings, log, "--idle-timeout-s", "6")
    assert proc.wait(180) == 0, log.read_text()[-3000:]

    # Then every input offset is committed and every injected anomaly's alert id is present
    assert committed_total(broker.bootstrap_servers, settings.kafka.group_id, topic) == len(raws)
    alerts = alerts_of(broker.bootstrap_servers, settings.kafka.alerts_topic, expect=len(anomalous))
    ids = {a["alert_id"] for a in alerts}
    for i in anomalous:
        assert alert_id(topic, produced[i].partition, produced[i].offset) in ids
    # (duplicates are allowed: at-least-once; consumers de-duplicate on alert_id)
    assert len(alerts) >= len(ids)


def test_two_replicas_share_partitions_and_lose_nothing(broker, tmp_path: Path) -> None:
    # Given 3 partitions of events and two `detector run` processes in one group
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    broker.create_topics([topic], partitions=3)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_service_process(settings, log, "--idle-timeout-s", "20") for log in logs]
    # both own partitions before data arrives, so the group spreads them over both (a fixed
    # sleep was too short on a loaded machine: one replica took everything)
    wait_for(
        lambda: all("partitions assigned: ['" in log.read_text() for log in logs),
        60,
        "both replicas assigned",
        tail=logs[1],
    )
    raws, anomalous = events_with_anomalies(15_000, seed=7)
    produced = produce(broker.bootstrap_servers, topic, raws)
    for p in procs:
        assert p.wait(180) == 0
    # Then both replicas were assigned partitions, and all events were scored with none lost
    texts = [log.read_text() for log in logs]
    for text in texts:
        assert f"partitions assigned: ['{topic}-" in text, text[-2000:]
    assert committed_total(broker.bootstrap_servers, settings.kafka.group_id, topic) == len(raws)
    ids = {a["alert_id"] for a in alerts_of(broker.bootstrap_servers, settings.kafka.alerts_topic)}
    for i in anomalous:
        assert alert_id(topic, produced[i].partition, produced[i].offset) in ids


def test_a_replica_joining_mid_stream_takes_partitions_over_without_loss(
    broker, tmp_path: Path
) -> None:
    # Given one replica busy with a steady stream of events on 3 partitions
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    broker.create_topics([topic], partitions=3)
    raws, anomalous = events_with_anomalies(30_000, seed=11)
    produced: list = []
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    procs = [start_service_process(settings, logs[0], "--idle-timeout-s", "12")]
    all_three = f"partitions assigned: ['{topic}-0', '{topic}-1', '{topic}-2']"
    wait_for(lambda: all_three in logs[0].read_text(), 60, "the first replica owns every partition")

    def feed() -> None:
        for i in range(0, len(raws), 500):
            produced.extend(produce(broker.bootstrap_servers, topic, raws[i : i + 500]))
            time.sleep(0.25)  # ~15 s of stream: the second join lands in the middle of it

    feeder = threading.Thread(target=feed)
    feeder.start()

    # When a second replica joins while batches are in flight (the first must hand over
    # partitions mid-stream: revoke, commit what it finished, then let them go)
    time.sleep(2)
    procs.append(start_service_process(settings, logs[1], "--idle-timeout-s", "12"))
    feeder.join(180)
    for p in procs:
        assert p.wait(180) == 0

    # Then partitions moved, every offset is committed and every injected anomaly alerted
    first, second = (log.read_text() for log in logs)
    assert f"partitions revoked: ['{topic}-" in first, first[-3000:]
    assert f"partitions assigned: ['{topic}-" in second, second[-3000:]
    assert committed_total(broker.bootstrap_servers, settings.kafka.group_id, topic) == len(raws)
    ids = {a["alert_id"] for a in alerts_of(broker.bootstrap_servers, settings.kafka.alerts_topic)}
    missing = [
        i
        for i in anomalous
        if alert_id(topic, produced[i].partition, produced[i].offset) not in ids
    ]
    assert not missing


def test_hot_reload_takes_new_version_and_refuses_tampered(broker, tmp_path: Path) -> None:
    # Given a running service scoring with version 1
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    v1 = train_and_publish(settings, seed=0)
    topic = settings.kafka.input_topic
    registry = ModelRegistry(settings.registry)
    with service_thread(settings) as service:
        raws, _ = events_with_anomalies(2_000, seed=11)
        produce(broker.bootstrap_servers, topic, raws)
        wait_for(lambda: service.consumed >= 2_000, 60, "first batch")
        # When version 2 is promoted mid-stream
        v2 = train_and_publish(settings, seed=1)
        wait_for(
            lambda: service.scorer is not None and service.scorer.version == v2, 30, "reload of v2"
        )
        raws2, _ = events_with_anomalies(2_000, seed=12)
        produce(broker.bootstrap_servers, topic, raws2)
        wait_for(lambda: service.consumed >= 4_000, 60, "second batch")
        # ...and then CURRENT is pointed at a version whose bundle was changed on disk
        v3 = registry.publish(registry.load(v2), promote=False)
        bundle = registry.versions_dir / v3 / BUNDLE_FILE
        data = bytearray(bundle.read_bytes())
        data[len(data) // 2] ^= 0xFF
        bundle.write_bytes(bytes(data))
        _atomic_write(registry.root / "CURRENT", v3.encode())
        wait_for(
            lambda: current(service.metrics.model_reloads.labels("refused")) >= 1, 30, "refusal"
        )
        raws3, _ = events_with_anomalies(2_000, seed=13)
        produce(broker.bootstrap_servers, topic, raws3)
        wait_for(lambda: service.consumed >= 6_000, 60, "third batch")
        wait_for(lambda: not service.offsets.pending, 30, "sends acknowledged")
    # Then early alerts carry v1, later ones v2, none v3, and nothing restarted
    alerts = alerts_of(broker.bootstrap_servers, settings.kafka.alerts_topic)
    by_offset = sorted(alerts, key=lambda a: a["source"]["offset"])
    versions = [a["model_version"] for a in by_offset]
    assert versions[0] == v1
    assert versions[-1] == v2
    assert v3 not in versions
    assert service.scorer is not None and service.scorer.version == v2
    assert current(service.metrics.model_reloads.labels("loaded")) == 1


def test_sigterm_exits_cleanly_with_everything_processed_committed(broker, tmp_path: Path) -> None:
    # Given a `detector run` process working through 40,000 events
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    raws, _ = events_with_anomalies(40_000, seed=17)
    produce(broker.bootstrap_servers, topic, raws)
    log = tmp_path / "service.log"
    proc = start_service_process(settings, log)
    wait_for(lambda: "partitions assigned: ['" in log.read_text(), 60, "assignment")
    time.sleep(0.5)
    # When it gets SIGTERM
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    # Then it exits 0 within the grace period, and what it consumed is exactly what is committed
    assert code == 0, log.read_text()[-3000:]
    assert time.monotonic() - started < 20
    text = log.read_text()
    assert "SIGTERM received" in text
    consumed = int(text.split("stopped: consumed ")[1].split(",")[0])
    assert consumed > 0
    assert committed_total(broker.bootstrap_servers, settings.kafka.group_id, topic) == consumed


def test_broker_down_at_start_is_not_ready_and_does_not_crash(tmp_path: Path) -> None:
    # Given a service pointed at a port where no broker listens
    settings = settings_for_test(
        "127.0.0.1:1",
        tmp_path / "models",
        kafka={"request_timeout_ms": 2000, "bootstrap_timeout_ms": 1000},
    )
    train_and_publish(settings)
    from detector.health import HealthServer

    with service_thread(settings) as service:
        server = HealthServer("127.0.0.1", 0, service.metrics.registry, service.health).start()
        try:
            # When it tries for a few seconds
            time.sleep(3)
            # Then it is alive but not ready, and has counted broker errors instead of crashing
            base = f"http://127.0.0.1:{server.port}"
            assert urllib.request.urlopen(base + "/healthz").status == 200
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + "/readyz")
            assert err.value.code == 503
            assert current(service.metrics.broker_errors) >= 1
            metrics = urllib.request.urlopen(base + "/metrics").read().decode()
            assert "detector_broker_errors_total" in metrics
        finally:
            server.stop()
