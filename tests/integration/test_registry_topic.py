"""The model registry on a compacted Kafka topic (``registry.backend = "kafka"``), on the
real broker: versions reach fresh mirrors chunked, promotions and rollbacks travel as
records, a tampered version is refused, and replicas without a shared disk follow it.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from detector.cli.main import app
from detector.errors import ModelIntegrityError, RegistryError
from detector.model.train import train
from detector.registry.topic import TopicRegistry, open_registry
from detector.settings import Settings
from detector.stream.alerts import alert_id
from detector.stream.broker import LocalBroker, free_port
from detector.stream.clients import ensure_topics
from tests.integration.streams import (
    FEATURES,
    alerts_of,
    committed_total,
    env_for,
    held_partitions,
    normal_rows,
    read_topic,
    recent_base_ms,
    settings_for_test,
    wait_for,
)

pytestmark = pytest.mark.broker

SIGNING_KEY = "registry-topic-test-key"


def topic_settings(broker: LocalBroker, directory: Path, **registry: Any) -> Settings:
    """A test's settings on a registry topic of its own (4 KiB chunks, signed versions)."""
    return settings_for_test(
        broker.bootstrap_servers,
        directory,
        registry={
            "backend": "kafka",
            "topic": f"models-{uuid.uuid4().hex[:8]}",
            "chunk_bytes": 4096,
            "signing_key": SIGNING_KEY,
            "sync_timeout_s": 20.0,
            **registry,
        },
    )


def topic_env(settings: Settings, directory: Path) -> dict[str, str]:
    """`detector` configured from the environment alone, on the registry topic, mirroring it
    into ``directory`` (env_for leaves the registry's backend, topic and key out)."""
    return env_for(settings) | {
        "DETECTOR_REGISTRY__BACKEND": "kafka",
        "DETECTOR_REGISTRY__TOPIC": settings.registry.topic,
        "DETECTOR_REGISTRY__SIGNING_KEY": SIGNING_KEY,
        "DETECTOR_REGISTRY__PATH": str(directory),
    }


def mirror(settings: Settings, directory: Path) -> TopicRegistry:
    reg = open_registry(settings.registry.model_copy(update={"path": directory}), settings.kafka)
    assert isinstance(reg, TopicRegistry)
    return reg


def publish(settings: Settings, seed: int, shift: float = 0.0) -> str:
    rows = [dict(zip(FEATURES, r, strict=True)) for r in normal_rows(4_000, seed, shift).tolist()]
    registry = open_registry(settings.registry, settings.kafka)
    try:
        return registry.publish(train(rows, settings))
    finally:
        registry.close()


def forge(bootstrap: str, topic: str, source: Path, version: str) -> None:
    """A version that copies ``source``'s files with one byte of the bundle changed, sent
    with a CURRENT record pointing at it: what an attacker with write access could send."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
    layout = {}
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        data = bytearray(path.read_bytes())
        if path.name == "bundle.joblib":
            data[len(data) // 2] ^= 0xFF
        producer.send(topic, key=f"v/{version}/f/{path.name}/0".encode(), value=bytes(data))
        layout[path.name] = {"chunks": 1, "size": len(data)}
    producer.send(topic, key=f"v/{version}".encode(), value=orjson.dumps({"files": layout}))
    producer.send(topic, key=b"CURRENT", value=version.encode())
    producer.flush(30)
    producer.close()


def test_versions_promotions_and_rollbacks_reach_a_fresh_mirror_and_a_forgery_is_refused(
    broker: LocalBroker, tmp_path: Path
) -> None:
    # Given a trainer publishing to a registry topic in 4 KiB chunks, with a signing key
    settings = topic_settings(broker, tmp_path / "trainer")
    topic = settings.registry.topic
    # (a replica that starts before anything is published has no model, and no error)
    replica = mirror(settings, tmp_path / "replica")
    assert replica.current() is None
    v1 = publish(settings, seed=1)
    # When the replica, with its empty directory, follows the topic
    # Then it has the version, verified, as CURRENT; the bundle travelled in several chunks
    assert replica.current() == v1
    assert replica.load().version == v1
    keys = [r.key.decode() for r in read_topic(broker.bootstrap_servers, topic, idle_s=1.0)]
    assert sum(k.startswith(f"v/{v1}/f/bundle.joblib/") for k in keys) > 1, keys
    # When a second version is promoted, then rolled back from the trainer
    v2 = publish(settings, seed=2, shift=0.5)
    assert replica.current() == v2
    trainer = open_registry(settings.registry, settings.kafka)
    assert trainer.rollback() == v1
    trainer.close()
    # Then the replica follows both moves; a third, fresh mirror sees the outcome too
    assert replica.current() == v1
    late = mirror(settings, tmp_path / "late")
    assert late.current() == v1
    late.close()
    # When a forged version (a changed bundle byte) is sent and made CURRENT on the topic
    forge(broker.bootstrap_servers, topic, tmp_path / "trainer" / "versions" / v2, "forged-1")
    # Then the mirror points at it but refuses to load it: the manifest's checksum fails
    assert replica.current() == "forged-1"
    with pytest.raises(ModelIntegrityError):
        replica.load()
    replica.close()


def test_the_cli_promotes_and_rolls_back_through_the_topic(
    broker: LocalBroker, tmp_path: Path
) -> None:
    # Given two versions published to a registry topic, v2 current
    settings = topic_settings(broker, tmp_path / "trainer")
    v1 = publish(settings, seed=1)
    v2 = publish(settings, seed=2, shift=0.5)
    # When an operator on another machine (an empty directory) uses `detector models`
    env = topic_env(settings, tmp_path / "operator")
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--json"], env=env)
    rolled = runner.invoke(app, ["models", "rollback"], env=env)
    # Then it lists both versions, and its rollback reaches a replica's mirror
    assert listed.exit_code == 0 and v1 in listed.output and v2 in listed.output, listed.output
    assert rolled.exit_code == 0, rolled.output
    replica = mirror(settings, tmp_path / "replica")
    assert replica.current() == v1
    # ...and so does a promotion back to v2
    promoted = runner.invoke(app, ["models", "promote", v2], env=env)
    assert promoted.exit_code == 0, promoted.output
    assert replica.current() == v2
    replica.close()


def test_pruned_versions_leave_the_topic_and_mirrors_stay_bounded(
    broker: LocalBroker, tmp_path: Path
) -> None:
    # Given a registry topic whose trainer keeps 2 versions
    settings = topic_settings(broker, tmp_path / "trainer", keep_versions=2)
    topic = settings.registry.topic
    # When three versions are published
    v1, v2, v3 = (publish(settings, seed=s) for s in (1, 2, 3))
    # Then the first one's records are tombstoned on the topic (compaction removes them)
    records = read_topic(broker.bootstrap_servers, topic, idle_s=1.0)
    dead = {r.key.decode() for r in records if r.value is None}
    assert f"v/{v1}" in dead and any(k.startswith(f"v/{v1}/f/bundle.joblib/") for k in dead)
    assert not any(k.startswith((f"v/{v2}", f"v/{v3}")) for k in dead)
    # ...and a fresh mirror, which replays them all, keeps the newest two with v3 current
    replica = mirror(settings, tmp_path / "replica")
    assert replica.current() == v3
    assert [v.version for v in replica.list()] == [v2, v3]
    replica.close()


@pytest.mark.needs_broker(
    "kafka", reason="Tansu ignores max.message.bytes (DESIGN.md), so it never refuses a chunk"
)
def test_a_chunk_the_topic_refuses_names_the_setting_to_change(
    broker: LocalBroker, tmp_path: Path
) -> None:
    # Given a registry topic that takes messages of at most 2 KiB, and 8 KiB chunks
    settings = topic_settings(broker, tmp_path / "trainer", chunk_bytes=8192)
    ensure_topics(
        broker.bootstrap_servers,
        {settings.registry.topic: 1},
        topic_configs={"cleanup.policy": "compact", "max.message.bytes": "2048"},
    )
    # When a version is published / Then the error names both limits to change
    with pytest.raises(RegistryError, match=r"registry\.chunk_bytes.*max\.message\.bytes"):
        publish(settings, seed=1)


PARTITIONS = 6
PARTITIONS = 6


def send_events(bootstrap: str, topic: str, n: int, seed: int) -> tuple[list[Any], list[int]]:
    """n events spread evenly over the partitions, every 49th far out (so every partition
    gets some): (metadata, anomalous)."""
    x = normal_rows(n, seed)
    anomalous = list(range(25, n, 49))
    x[anomalous, 1] += 8.0 * 0.05
    base = recent_base_ms()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    futures = [
        producer.send(
            topic,
            orjson.dumps(
                {
                    "entity": f"pump-{i % 12:02d}",
                    "ts": base + i,
                    "values": dict(zip(FEATURES, row, strict=True)),
                }
            ),
            partition=i % PARTITIONS,
        )
        for i, row in enumerate(x.tolist())
    ]
    producer.flush(30)
    metas = [f.get(timeout=30) for f in futures]
    producer.close()
    return metas, anomalous


def metric(port: int, name: str, **labels: str) -> float | None:
    """A sample of a replica's /metrics (None: not there)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{{{re.escape(want)}}} (\S+)$" if want else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_three_replicas_without_a_shared_disk_follow_promotions_survive_a_kill_and_refuse_a_forgery(
    broker: LocalBroker, tmp_path: Path
) -> None:
    # Given a model v1 on a registry topic and three `detector run` replicas in one group
    # over 6 partitions, each with its own empty registry directory (no shared disk)
    settings = topic_settings(broker, tmp_path / "trainer")
    topic = settings.registry.topic
    k = settings.kafka
    broker.create_topics([k.input_topic], partitions=PARTITIONS)
    v1 = publish(settings, seed=1)
    ports = [free_port() for _ in range(3)]
    logs = [tmp_path / f"replica-{i}.log" for i in range(3)]
    procs = []
    for i in range(3):
        env = topic_env(settings, tmp_path / f"replica-{i}") | {
            "DETECTOR_SERVICE__METRICS_PORT": str(ports[i]),
        }
        with logs[i].open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "detector", "run"], env=env, stdout=out, stderr=out
                )
            )
    sent: list[Any] = []
    anomalies: list[Any] = []

    def send(n: int, seed: int) -> None:
        metas, anomalous = send_events(broker.bootstrap_servers, k.input_topic, n, seed)
        sent.extend(metas)
        anomalies.extend(metas[i] for i in anomalous)

    def all_committed() -> bool:
        return committed_total(broker.bootstrap_servers, k.group_id, k.input_topic) == len(sent)

    try:
        wait_for(
            lambda: (
                all(held_partitions(log) for log in logs)
                and len(set().union(*(held_partitions(log) for log in logs))) == PARTITIONS
            ),
            120,
            "three replicas holding all 6 partitions",
            tail=logs[0],
        )
        assert all(metric(p, "detector_model_info", version=v1) == 1.0 for p in ports)
        send(1_200, seed=11)
        wait_for(all_committed, 90, "the first events committed", tail=logs[0])

        # When v2 is promoted on the topic
        v2 = publish(settings, seed=2, shift=0.3)
        # Then every replica reports it in its metrics, and alerts after it carry it
        wait_for(
            lambda: all(metric(p, "detector_model_info", version=v2) == 1.0 for p in ports),
            60,
            "v2 in every replica's metrics",
            tail=logs[0],
        )
        mark = len(sent)
        send(1_200, seed=12)
        wait_for(all_committed, 90, "the events after v2 committed", tail=logs[0])
        after = {alert_id(k.input_topic, m.partition, m.offset) for m in sent[mark:]}
        versions = {
            (a["source"]["partition"], a["model_version"])
            for a in alerts_of(broker.bootstrap_servers, k.alerts_topic)
            if a["alert_id"] in after
        }
        assert {p for p, _ in versions} == set(range(PARTITIONS)), versions
        assert {v for _, v in versions} == {v2}, versions

        # When one replica is SIGKILLed and more events come
        procs[2].send_signal(signal.SIGKILL)
        procs[2].wait(10)
        killed_at = time.monotonic()
        send(1_200, seed=13)
        # Then the two others take its partitions over and every event is committed
        wait_for(all_committed, 120, "every event committed after the kill", tail=logs[0])
        takeover_s = time.monotonic() - killed_at

        # When a forged version (one bundle byte changed) is made CURRENT on the topic
        forge(broker.bootstrap_servers, topic, tmp_path / "trainer" / "versions" / v2, "forged-2")
        # Then both live replicas refuse it and keep scoring with v2
        wait_for(
            lambda: all(
                (metric(p, "detector_model_reloads_total", outcome="refused") or 0) >= 1
                for p in ports[:2]
            ),
            60,
            "the forgery refused by both live replicas",
            tail=logs[0],
        )
        assert all(metric(p, "detector_model_info", version=v2) == 1.0 for p in ports[:2])
        mark = len(sent)
        send(600, seed=14)
        wait_for(all_committed, 90, "the events after the forgery committed", tail=logs[0])
        # (each live replica's counters add up: every record it consumed ended scored or
        # dead-lettered, and together they consumed every event the dead one left)
        consumed = [metric(p, "detector_consumed_total") or 0.0 for p in ports[:2]]
        for p, n in zip(ports[:2], consumed, strict=True):
            ended = sum(
                metric(p, "detector_events_total", outcome=o) or 0.0
                for o in ("scored", "dead_lettered")
            )
            assert n == ended, (p, n, ended)
        assert sum(consumed) >= len(sent) - len(sent) // 3, (consumed, len(sent))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()

    # ...and nothing was lost: every anomaly alerted, the alerts after the forgery by v2
    alerts = alerts_of(broker.bootstrap_servers, k.alerts_topic)
    ids = {a["alert_id"]: a for a in alerts}
    for m in anomalies:
        assert alert_id(k.input_topic, m.partition, m.offset) in ids
    late = {alert_id(k.input_topic, m.partition, m.offset) for m in sent[mark:]}
    assert {a["model_version"] for a in alerts if a["alert_id"] in late} == {v2}
    for log in logs[:2]:
        assert "forged-2 refused" in log.read_text()
    print(f"\ntakeover and catch-up after SIGKILL: {takeover_s:.1f} s; {len(sent)} events")
