"""Faults on the real broker: compressed input, a broker that dies, hangs or is replaced,
a replica killed mid-stream. Each test says where every record ended.

Tests that break the broker get their own (``own_broker``: a new instance of the session
broker's class on a free port), so the session broker other tests share is never hurt.
The broker object must offer ``start/stop/kill/pause/resume/restart`` (EmbeddedBroker
does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from detector.health import HealthServer
from detector.metrics import current
from detector.stream.alerts import alert_id
from detector.stream.service import DetectorService
from tests.integration.streams import (
    SESSION_TIMEOUT_MS,
    CpuWatch,
    Produced,
    alerts_of,
    committed_total,
    env_for,
    events_with_anomalies,
    open_fds,
    produce,
    rss_mib,
    service_thread,
    settings_for_test,
    start_service_process,
    train_and_publish,
    wait_for,
)

pytestmark = pytest.mark.broker

CODECS = ("gzip", "snappy", "lz4", "zstd")


@pytest.fixture
def own_broker(broker: Any) -> Iterator[Any]:
    """A broker of the session broker's kind that this test alone may kill or pause."""
    b = type(broker)()
    b.start()
    try:
        yield b
    finally:
        b.resume()  # a SIGSTOPped broker ignores SIGTERM
        b.stop()


def produce_compressed(
    bootstrap: str, topic: str, values: list[bytes], codec: str, partition: int
) -> list[Produced]:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, compression_type=codec, linger_ms=20, batch_size=64 * 1024
    )
    try:
        futures = [producer.send(topic, value=v, partition=partition) for v in values]
        producer.flush(30)
        metas = [f.get(timeout=30) for f in futures]
    finally:
        producer.close()
    return [Produced(m.partition, m.offset) for m in metas]


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def wait_ready(port: int, want: bool, timeout_s: float, what: str) -> float:
    """Seconds until /readyz says ``want``; fails with its last answer otherwise."""
    started = time.monotonic()
    last: tuple[int, str] = (0, "")

    def check() -> bool:
        nonlocal last
        last = readyz(port)
        return (last[0] == 200) == want

    try:
        wait_for(check, timeout_s, what, interval_s=0.25)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; /readyz answered {last}") from None
    return time.monotonic() - started


def scored_total(service: DetectorService) -> float:
    m = service.metrics
    return current(m.events.labels("scored")) + current(m.events.labels("dead_lettered"))


# -- compression ----------------------------------------------------------------------------
def test_every_kafka_codec_is_decoded_and_scored(broker, tmp_path: Path) -> None:
    # Given a running service (fetch process on) and one producer per Kafka codec, each on
    # its own partition
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    broker.create_topics([topic], partitions=len(CODECS))
    per_codec = 1_000
    raws, anomalous = events_with_anomalies(per_codec * len(CODECS), seed=21)
    with service_thread(settings) as service:
        # When each producer sends its share compressed with its codec
        produced: list[Produced] = []
        for i, codec in enumerate(CODECS):
            chunk = raws[i * per_codec : (i + 1) * per_codec]
            produced += produce_compressed(broker.bootstrap_servers, topic, chunk, codec, i)
        wait_for(lambda: scored_total(service) >= len(raws), 90, "every record scored")
        wait_for(lambda: not service.offsets.pending, 30, "sends acknowledged")
        fetch_restarts = current(service.metrics.broker_errors)

    # Then every record was scored (none dead-lettered), each codec's anomalies alerted,
    # and the fetch process never restarted
    m = service.metrics
    assert current(m.events.labels("scored")) == len(raws)
    assert current(m.events.labels("dead_lettered")) == 0
    assert fetch_restarts == 0
    ids = {a["alert_id"] for a in alerts_of(broker.bootstrap_servers, settings.kafka.alerts_topic)}
    for i in anomalous:
        assert alert_id(topic, produced[i].partition, produced[i].offset) in ids, CODECS[
            i // per_codec
        ]


@pytest.mark.needs_broker(
    "tansu",
    reason="Apache Kafka decompresses and validates every produced batch and refuses a corrupt "
    "one (UnknownError at produce time), so its consumers never meet one; Tansu stores it as sent",
)
def test_an_undecodable_batch_holds_its_partition_and_the_others_flow(
    broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a service, and on partition 1 a batch whose lz4 payload is garbage (its CRC
    # matches, so only decompression can tell)
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    broker.create_topics([topic], partitions=2)
    good, _ = events_with_anomalies(2_000, seed=22)
    import kafka.codec
    import kafka.record.default_records as records_v2

    real_encode = kafka.codec.lz4_encode
    monkeypatch.setattr(records_v2, "lz4_encode", lambda payload: b"\x00garbage" * 8)
    produce_compressed(broker.bootstrap_servers, topic, good[:10], "lz4", partition=1)
    monkeypatch.setattr(records_v2, "lz4_encode", real_encode)
    server: HealthServer | None = None
    with service_thread(settings) as service:
        server = HealthServer("127.0.0.1", 0, service.metrics.registry, service.health).start()
        try:
            # When good events keep arriving on partition 0 (and after the bad batch on 1)
            produce_compressed(broker.bootstrap_servers, topic, good[10:1_000], "lz4", 0)
            wait_for(lambda: service._fetcher is not None, 30, "session")
            pid = getattr(service._fetcher, "pid", None)
            wait_for(lambda: scored_total(service) >= 990, 60, "partition 0 scored")
            # Then partition 1 is held and /readyz names it and the decode error
            wait_for(lambda: service.health.held, 30, "partition 1 held")
            code, body = readyz(server.port)
            assert code == 503
            assert f"partition {topic}-1 held" in body and "cannot be decoded" in body
            # ...partition 0 keeps flowing, in the same fetch process, with no session restart
            produce_compressed(broker.bootstrap_servers, topic, good[1_000:2_000], "lz4", 0)
            wait_for(lambda: scored_total(service) >= 1_990, 60, "more of partition 0 scored")
            assert getattr(service._fetcher, "pid", None) == pid
            assert current(service.metrics.broker_errors) == 0
            # ...and nothing of partition 1 was scored, dead-lettered or committed past it
            assert scored_total(service) == 1_990
        finally:
            server.stop()
    assert committed_total(broker.bootstrap_servers, settings.kafka.group_id, topic) == 1_990


# -- readiness ------------------------------------------------------------------------------
def test_readiness_follows_the_broker_killed_and_replaced(own_broker, tmp_path: Path) -> None:
    # Given a ready service on a broker of its own
    bootstrap = own_broker.bootstrap_servers
    settings = settings_for_test(bootstrap, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    own_broker.create_topics([topic], partitions=2)
    first, _ = events_with_anomalies(2_000, seed=23)
    produce(bootstrap, topic, first)
    with service_thread(settings) as service:
        server = HealthServer("127.0.0.1", 0, service.metrics.registry, service.health).start()
        try:
            wait_for(lambda: scored_total(service) >= len(first), 60, "first events scored")
            wait_ready(server.port, True, 30, "ready")

            # When the broker is SIGKILLed (every thread's and the fetch process's CPU
            # watched from here on: kafka-python's network threads once spun after this)
            fds_before, rss_before_mib = open_fds(), rss_mib()
            cpu = CpuWatch(window_s=5.0).start()
            own_broker.kill()
            # Then /readyz turns 503 within about a session timeout, and says why
            took_s = wait_ready(server.port, False, SESSION_TIMEOUT_MS / 1000 + 10, "not ready")
            _, body = readyz(server.port)
            assert "Kafka" in body or "commit overdue" in body, body
            assert service.health.live()[0]

            # When a new broker comes up on the same port (empty: Tansu keeps no disk)
            own_broker.restart()
            own_broker.create_topics([topic], partitions=2)
            # Then the service is ready again by itself, and scores what arrives next
            back_s = wait_ready(server.port, True, 90, "ready again")
            second, anomalous = events_with_anomalies(2_000, seed=24)
            before = scored_total(service)
            produced = produce(bootstrap, topic, second)
            wait_for(lambda: scored_total(service) >= before + len(second), 60, "second scored")
            # (Tansu's replacement starts empty: only the second stream's offsets exist)
            wait_for(
                lambda: committed_total(bootstrap, settings.kafka.group_id, topic) >= len(second),
                60,
                "the second stream committed",
            )
            time.sleep(15)  # idle, as a spin that outlives the recovery would be seen idle
            cpu.stop()
            fds_after, rss_after_mib = open_fds(), rss_mib()
        finally:
            server.stop()
    ids = {a["alert_id"] for a in alerts_of(bootstrap, settings.kafka.alerts_topic)}
    for i in anomalous:
        assert alert_id(topic, produced[i].partition, produced[i].offset) in ids
    # and no thread and no fetch process burnt half a core over 15 s (three 5 s windows in
    # a row), from the kill through the outage, the recovery and 15 s of idling (the
    # recovery's rejoin and 2,000 events are a burst in one or two windows)
    share, whose = cpu.busiest_sustained(windows=3)
    # and the outage left no sockets behind (this process and its fetch process)
    assert fds_after <= fds_before + 5, (fds_before, fds_after)
    # (issue 16, item 5: kafka-python's producer once spun here at 76-99% of a core, while
    # the replaced broker had not recreated the alerts and samples topics; the fix is
    # detector/stream/kafka_python_fixes.py, and this assertion caught it in 4 runs of 6)
    where = cpu.stacks.get(whose, "(no Python stack: not a Python thread, or a child)")
    assert share < 0.5, (
        f"{whose} used {share:.0%} of a core over 15 s: {cpu.windows}\n"
        f"its stack in a busy window:\n{where}"
    )
    print(
        f"not ready {took_s:.1f} s after the kill; ready {back_s:.1f} s after the restart; "
        f"busiest thread over 15 s {share:.0%} of a core ({whose}), in one window "
        f"{cpu.busiest()[0]:.0%}; "
        f"fds {fds_before} -> {fds_after}, RSS {rss_before_mib:.0f} -> {rss_after_mib:.0f} MiB"
    )


def test_the_cpu_watch_sees_a_spinning_process() -> None:
    # Given a child process of ours that spins for 4.5 s (what the check above must catch;
    # a process, so the watch does not wait on the spinner for the GIL)
    spin = "import time\nend = time.monotonic() + 4.5\nwhile time.monotonic() < end: pass"
    # When it is watched in 1 s windows
    with CpuWatch(window_s=1.0) as cpu:
        # ("detector.spin" in its argv makes it one of ours, as the fetch process is)
        spinner = subprocess.Popen([sys.executable, "-c", spin, "detector.spin"])
        _, _, usage = os.wait4(spinner.pid, 0)
        spinner.returncode = 0
    # Then three windows in a row saw the share of a core it really had: most of one on an
    # idle machine, less when other work shares the cores (its own CPU time tells)
    had = (usage.ru_utime + usage.ru_stime) / 4.5
    share, whose = cpu.busiest_sustained(windows=3)
    assert share > 0.75 * had and share > 0.2, (had, cpu.windows)
    assert "detector.spin" in whose


def test_broker_sigstop_20s_is_not_ready_then_loses_nothing(own_broker, tmp_path: Path) -> None:
    # Given a service scoring a steady stream on a broker of its own
    bootstrap = own_broker.bootstrap_servers
    settings = settings_for_test(bootstrap, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    own_broker.create_topics([topic], partitions=2)
    raws, anomalous = events_with_anomalies(6_000, seed=25)
    produced = produce(bootstrap, topic, raws[:2_000])
    with service_thread(settings) as service:
        server = HealthServer("127.0.0.1", 0, service.metrics.registry, service.health).start()
        try:
            wait_for(lambda: scored_total(service) >= 2_000, 60, "first events scored")
            wait_ready(server.port, True, 30, "ready")

            # When the broker hangs (SIGSTOP) for 20 s
            own_broker.pause()
            paused_at = time.monotonic()
            took_s = wait_ready(server.port, False, 18, "not ready while the broker hangs")
            time.sleep(max(0.0, 20 - (time.monotonic() - paused_at)))
            own_broker.resume()

            # Then it is ready again by itself and every event, before and after, is scored
            back_s = wait_ready(server.port, True, 90, "ready after SIGCONT")
            produced += produce(bootstrap, topic, raws[2_000:])
            wait_for(
                lambda: committed_total(bootstrap, settings.kafka.group_id, topic) == len(raws),
                90,
                "everything committed",
            )
        finally:
            server.stop()
    ids = {a["alert_id"] for a in alerts_of(bootstrap, settings.kafka.alerts_topic)}
    for i in anomalous:
        assert alert_id(topic, produced[i].partition, produced[i].offset) in ids
    print(f"not ready {took_s:.1f} s into the SIGSTOP; ready {back_s:.1f} s after SIGCONT")


# -- rebalances -----------------------------------------------------------------------------
def test_a_killed_replicas_partitions_move_within_a_session_timeout(broker, tmp_path: Path) -> None:
    # Given two `detector run` replicas sharing 4 partitions of a steady stream
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    broker.create_topics([topic], partitions=4)
    logs = [tmp_path / "survivor.log", tmp_path / "victim.log"]
    raws, anomalous = events_with_anomalies(16_000, seed=26)
    produced: list[Produced] = []
    with replicas() as procs:
        procs.append(start_service_process(settings, logs[0], "--idle-timeout-s", "6"))
        procs.append(start_service_process(settings, logs[1]))
        survivor, victim = procs
        wait_for(
            lambda: all("partitions assigned: ['" in log.read_text() for log in logs),
            60,
            "both replicas own partitions",
        )
        feeder = _stream(broker.bootstrap_servers, topic, raws, produced)  # ~8 s of events
        time.sleep(3)

        # When one replica is SIGKILLed mid-stream
        seen = len(logs[0].read_text())
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        victim.wait(10)
        all_four = f"partitions assigned: ['{topic}-0', '{topic}-1', '{topic}-2', '{topic}-3']"
        wait_for(lambda: all_four in logs[0].read_text()[seen:], 60, "the survivor owns all")
        takeover_s = time.monotonic() - killed_at
        feeder.join(120)

        # Then the survivor took every partition within ~1.5 session timeouts (+ Tansu's
        # join wait of half a session timeout and a margin for a loaded machine), consumed
        # them all and exited when idle; nothing was lost
        limit_s = 1.5 * SESSION_TIMEOUT_MS / 1000 + SESSION_TIMEOUT_MS / 2000 + 3
        assert takeover_s < limit_s, f"takeover took {takeover_s:.1f} s (limit {limit_s:.1f} s)"
        assert survivor.wait(120) == 0, logs[0].read_text()[-3000:]
    assert "Cannot block on net.run()" not in logs[0].read_text()
    _assert_nothing_lost(settings, raws, anomalous, produced)
    print(f"takeover after SIGKILL: {takeover_s:.1f} s (session timeout {SESSION_TIMEOUT_MS} ms)")


# -- the alerts topic refusing records ------------------------------------------------------
def _enforces_max_message_bytes(bootstrap: str) -> bool:
    """Whether this broker refuses a record over a topic's max.message.bytes (Tansu: no)."""
    import uuid

    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"probe-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, 1, 1, topic_configs={"max.message.bytes": "256"})])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        producer.send(name, b"x" * 2048).get(timeout=15)
        return False
    except Exception:
        return True
    finally:
        producer.close(2)


def test_a_refusing_alerts_topic_stops_commits_then_resumes_in_order(
    broker, tmp_path: Path
) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

    if not _enforces_max_message_bytes(broker.bootstrap_servers):
        pytest.skip("this broker ignores max.message.bytes (Tansu); the test runs on Apache Kafka")
    # Given an alerts topic that refuses every alert (max.message.bytes below an alert's size)
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    train_and_publish(settings)
    topic, alerts_topic = settings.kafka.input_topic, settings.kafka.alerts_topic
    broker.create_topics([topic], partitions=1)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    admin.create_topics([NewTopic(alerts_topic, 1, 1, topic_configs={"max.message.bytes": "64"})])
    raws, anomalous = events_with_anomalies(3_000, seed=27)
    produced = produce(broker.bootstrap_servers, topic, raws)
    group = settings.kafka.group_id
    try:
        with service_thread(settings) as service:
            # When the service meets the first anomaly
            wait_for(lambda: current(service.metrics.broker_errors) >= 2, 60, "retries")
            # Then it commits nothing past the first alerting event, and retries with back-off
            assert committed_total(broker.bootstrap_servers, group, topic) <= anomalous[0]
            assert not service.health.ready()[0]
            # When the topic accepts alerts again
            admin.alter_configs(
                [
                    ConfigResource(
                        ConfigResourceType.TOPIC, alerts_topic, {"max.message.bytes": "1048588"}
                    )
                ]
            )
            # Then everything is committed and every anomaly alerted, in input order
            wait_for(
                lambda: committed_total(broker.bootstrap_servers, group, topic) == len(raws),
                120,
                "everything committed",
            )
    finally:
        admin.close()
    offsets = [a["source"]["offset"] for a in alerts_of(broker.bootstrap_servers, alerts_topic)]
    first_seen = list(dict.fromkeys(offsets))
    assert first_seen == sorted(first_seen)
    for i in anomalous:
        assert produced[i].offset in first_seen


# -- a replica killed during a reload, or during a rebalance --------------------------------
def _start_replica(settings: Any, log: Path, *args: str) -> subprocess.Popen[bytes]:
    # A member killed before it rejoins holds a rebalance until the rebalance timeout
    # (kafka-python sends max_poll_interval_ms: 300 s by default); keep that short here.
    env = env_for(settings) | {"DETECTOR_KAFKA__MAX_POLL_INTERVAL_MS": "15000"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "detector", "run", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def replicas() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The `detector run` processes a test starts; any still running at the end are killed."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _stream(
    bootstrap: str, topic: str, raws: list[bytes], produced: list[Produced]
) -> threading.Thread:
    def feed() -> None:
        for i in range(0, len(raws), 1_000):
            produced.extend(produce(bootstrap, topic, raws[i : i + 1_000]))
            time.sleep(0.5)

    feeder = threading.Thread(target=feed)
    feeder.start()
    return feeder


def _assert_nothing_lost(
    settings: Any, raws: list[bytes], anomalous: list[int], produced: list[Produced]
) -> list[dict[str, Any]]:
    """Every offset committed, every anomaly alerted; a redelivered event's copies carry one
    alert id, one source position and, per model version, one verdict."""
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.kafka.input_topic
    assert committed_total(bootstrap, settings.kafka.group_id, topic) == len(raws)
    alerts = alerts_of(bootstrap, settings.kafka.alerts_topic)
    by_id: dict[str, list[dict[str, Any]]] = {}
    for a in alerts:
        by_id.setdefault(a["alert_id"], []).append(a)
    for i in anomalous:
        assert alert_id(topic, produced[i].partition, produced[i].offset) in by_id
    for copies in by_id.values():
        assert len({(c["source"]["partition"], c["source"]["offset"]) for c in copies}) == 1
        by_version: dict[str, set[tuple[str, str]]] = {}
        for c in copies:
            verdict = (c["severity"], f"{c['log_likelihood']:.6g}")
            by_version.setdefault(c["model_version"], set()).add(verdict)
        assert all(len(v) == 1 for v in by_version.values()), copies
    return alerts


def test_sigkill_during_a_reload_loses_nothing(broker, tmp_path: Path) -> None:
    # Given one replica scoring a steady stream on 3 partitions with model v1
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    v1 = train_and_publish(settings, seed=0)
    topic = settings.kafka.input_topic
    broker.create_topics([topic], partitions=3)
    raws, anomalous = events_with_anomalies(10_000, seed=28)
    produced: list[Produced] = []
    logs = [tmp_path / f"replica-{i}.log" for i in range(2)]
    with replicas() as procs:
        procs.append(_start_replica(settings, logs[0]))
        wait_for(lambda: "partitions assigned: ['" in logs[0].read_text(), 60, "assignment")
        feeder = _stream(broker.bootstrap_servers, topic, raws, produced)
        time.sleep(2)

        # When v2 is promoted and the replica is SIGKILLed in the reload window (CURRENT
        # is checked every 0.5 s; a load takes ~0.1-0.3 s here), then started again
        v2 = train_and_publish(settings, seed=1)
        time.sleep(0.4)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        procs.append(_start_replica(settings, logs[1], "--idle-timeout-s", "6"))
        feeder.join(120)

        # Then the restarted replica scores with v2, finishes, and nothing is lost
        assert procs[1].wait(180) == 0, logs[1].read_text()[-3000:]
    alerts = _assert_nothing_lost(settings, raws, anomalous, produced)
    assert {a["model_version"] for a in alerts} <= {v1, v2}
    assert f"scoring with model {v2} (was none)" in logs[1].read_text()


def test_sigkill_during_a_rebalance_loses_nothing(broker, tmp_path: Path) -> None:
    from detector.stream.broker import EmbeddedBroker

    if type(broker) is EmbeddedBroker:
        # Seen here: a member killed after its revocation and before it rejoins stalls
        # Tansu's group for good (3 min and more, rebalance timeout 15 s); Apache Kafka
        # drops such a member after the session timeout.
        pytest.skip("Tansu never completes a rebalance whose member died mid-join")
    # Given one replica scoring a steady stream on 3 partitions
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    broker.create_topics([topic], partitions=3)
    raws, anomalous = events_with_anomalies(16_000, seed=29)
    produced: list[Produced] = []
    logs = [tmp_path / f"replica-{i}.log" for i in range(2)]
    with replicas() as procs:
        procs.append(_start_replica(settings, logs[0]))
        wait_for(lambda: "partitions assigned: ['" in logs[0].read_text(), 60, "assignment")
        feeder = _stream(broker.bootstrap_servers, topic, raws, produced)
        time.sleep(2)
        # When a second replica joins and the first is SIGKILLed as soon as its
        # partitions are revoked (mid-rebalance, before it rejoins)
        procs.append(_start_replica(settings, logs[1], "--idle-timeout-s", "6"))
        wait_for(lambda: "partitions revoked: ['" in logs[0].read_text(), 60, "the rebalance")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        feeder.join(120)
        # Then the second takes every partition, finishes, and nothing is lost
        assert procs[1].wait(180) == 0, logs[1].read_text()[-3000:]
    _assert_nothing_lost(settings, raws, anomalous, produced)
