"""The confluent-kafka transport's own logic, without a broker (the integration suite runs the
service on it against a real one: ``make integration-confluent``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from confluent_kafka import KafkaError
from confluent_kafka import TopicPartition as ConfluentPartition
from kafka import TopicPartition

from detector.errors import ConfigError
from detector.settings import KafkaSettings, load_settings
from detector.stream.transport import confluent, confluent_config
from detector.stream.transport.confluent import ConfluentFetcher, DeliveryFuture
from detector.stream.transport.confluent_config import consumer_config, producer_config

ROOT = Path(__file__).resolve().parents[3]


def kafka_settings(**values: Any) -> KafkaSettings:
    base = {"bootstrap_servers": "127.0.0.1:9", "client": "confluent"}
    return load_settings(overrides={"kafka": base | values}, environ={}).kafka


class Handler:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[TopicPartition]]] = []

    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("revoked", partitions))

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("lost", partitions))

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("assigned", partitions))


def test_every_security_setting_reaches_both_clients_one_to_one() -> None:
    # Given SASL over TLS with a CA, a client certificate and a key
    cfg = kafka_settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="detector",
        sasl_password="s3cret-sentinel",
        ssl_cafile="/etc/ca.pem",
        ssl_certfile="/etc/cert.pem",
        ssl_keyfile="/etc/key.pem",
    )
    # When the librdkafka configurations are built
    for conf in (consumer_config(cfg), producer_config(cfg)):
        # Then each setting is there under its librdkafka name
        assert conf["security.protocol"] == "SASL_SSL"
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert conf["sasl.username"] == "detector"
        assert conf["sasl.password"] == "s3cret-sentinel"
        assert conf["ssl.ca.location"] == "/etc/ca.pem"
        assert conf["ssl.certificate.location"] == "/etc/cert.pem"
        assert conf["ssl.key.location"] == "/etc/key.pem"


def test_the_consumer_never_commits_on_its_own_and_revokes_eagerly() -> None:
    conf = consumer_config(kafka_settings(session_timeout_ms=9_000))
    assert conf["enable.auto.commit"] is False
    assert conf["enable.auto.offset.store"] is False
    assert conf["partition.assignment.strategy"] == "range"
    assert conf["heartbeat.interval.ms"] == 3_000
    producer = producer_config(kafka_settings(acks="1"))
    assert producer["acks"] == 1 and producer["enable.idempotence"] is False


def test_the_mapping_table_in_the_docs_is_the_code() -> None:
    # Given the table of docs/configuration.md
    doc = (ROOT / "docs" / "configuration.md").read_text()
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^\| `(\w+)` \|([^|]*)\|([^|]*)\|$", doc, re.MULTILINE)
        if m.group(1) in KafkaSettings.model_fields
    }
    # Then every mapped setting is in it, under the property the code uses
    for ours, theirs in confluent_config.CONSUMER_KEYS.items():
        assert f"`{theirs}`" in rows[ours][0], ours
    for ours, theirs in confluent_config.PRODUCER_KEYS.items():
        assert f"`{theirs}`" in rows[ours][1], ours


def test_a_settings_file_cannot_ask_for_exactly_once_on_confluent() -> None:
    with pytest.raises(ConfigError, match=r"exactly_once.*needs client = .kafka-python."):
        kafka_settings(delivery="exactly_once")


class FakeProducer:
    """Stands for librdkafka's producer: a poll delivers the reports queued so far."""

    def __init__(self) -> None:
        self.reports: list[tuple[DeliveryFuture, KafkaError | None]] = []
        self.polls = 0

    def poll(self, _timeout: float) -> int:
        self.polls += 1
        reports, self.reports = self.reports, []
        for future, err in reports:
            future(err, None)  # type: ignore[arg-type]
        return len(reports)


def test_a_delivery_future_waits_by_serving_reports_and_raises_a_failure() -> None:
    producer = FakeProducer()
    ok, bad = DeliveryFuture(producer), DeliveryFuture(producer)  # type: ignore[arg-type]
    producer.reports = [(ok, None), (bad, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))]
    assert not ok.is_done
    ok.get(timeout=1.0)  # served by its own poll
    assert ok.is_done and not ok.failed()
    assert bad.failed()
    with pytest.raises(confluent.ConfluentError, match="MSG_SIZE_TOO_LARGE"):
        bad.get(timeout=1.0)


def test_an_unacknowledged_send_times_out_naming_the_wait() -> None:
    never = DeliveryFuture(FakeProducer())  # type: ignore[arg-type]
    with pytest.raises(confluent.ConfluentError, match="not acknowledged within 0 s"):
        never.get(timeout=0.1)


@pytest.fixture
def fetcher() -> ConfluentFetcher:
    # librdkafka's consumer connects lazily: nothing is reached before a poll
    f = ConfluentFetcher(kafka_settings(bootstrap_timeout_ms=100), Handler())
    yield f
    f.consumer.close()


def test_async_commit_results_are_matched_to_their_tickets(fetcher: ConfluentFetcher) -> None:
    # Given two async commits of different offsets (librdkafka's answers written below)
    class NoBroker:
        def commit(self, **_: Any) -> None:
            return None

        def close(self) -> None:
            return None

    fetcher.consumer.close()
    fetcher.consumer = NoBroker()  # type: ignore[assignment]
    tp = TopicPartition("events", 0)
    first = fetcher.commit({tp: 10}, sync=False)
    second = fetcher.commit({tp: 20}, sync=False)
    # When librdkafka reports the second one failed and then the first one done
    fetcher._on_commit(
        KafkaError(KafkaError.REBALANCE_IN_PROGRESS), [ConfluentPartition("events", 0, 20)]
    )
    fetcher._on_commit(None, [ConfluentPartition("events", 0, 10)])
    # ...and a report no async commit waits for (a sync commit's)
    fetcher._on_commit(None, [ConfluentPartition("events", 0, 30)])
    # Then each ticket gets its own outcome, once
    results = dict(fetcher.commit_results())
    assert results[first] is None
    assert "REBALANCE_IN_PROGRESS" in str(results[second])
    assert len(results) == 2 and fetcher.commit_results() == []


def test_readiness_follows_librdkafkas_broker_and_group_state(fetcher: ConfluentFetcher) -> None:
    def stats(group: str, *broker_states: str) -> str:
        brokers = {f"b{i}": {"nodeid": i, "state": s} for i, s in enumerate(broker_states, start=1)}
        brokers["bootstrap"] = {"nodeid": -1, "state": "INIT"}  # not a broker of the cluster
        return orjson.dumps({"cgrp": {"state": group}, "brokers": brokers}).decode()

    assert fetcher.broker_problem() is not None  # nothing heard yet
    fetcher._on_stats(stats("up", "UP"))
    assert fetcher.broker_problem() is None
    fetcher._on_stats(stats("up", "DOWN"))
    assert fetcher.broker_problem() == "no broker connection up"
    fetcher._on_stats(stats("wait-coord", "UP"))
    assert "wait-coord" in str(fetcher.broker_problem())
    fetcher._on_stats(stats("up", "UP"))
    fetcher._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert fetcher.broker_problem() == "no broker connection up"


def test_rebalance_callbacks_reach_the_handler_as_kafka_partitions(
    fetcher: ConfluentFetcher,
) -> None:
    handler = fetcher.handler
    assert isinstance(handler, Handler)
    parts = [ConfluentPartition("events", 1), ConfluentPartition("events", 0)]
    fetcher._on_assign(fetcher.consumer, parts)
    fetcher._on_revoke(fetcher.consumer, parts)
    fetcher._on_lost(fetcher.consumer, parts)
    expected = [TopicPartition("events", 0), TopicPartition("events", 1)]
    assert handler.calls == [("assigned", expected), ("revoked", expected), ("lost", expected)]


class FakeMessage:
    """What MessageBatch reads of a librdkafka Message; counts the reads per column."""

    reads: ClassVar[dict[str, int]] = {}

    def __init__(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def _read(self, what: str) -> None:
        FakeMessage.reads[what] = FakeMessage.reads.get(what, 0) + 1

    def topic(self) -> str:
        self._read("topic")
        return self._t

    def partition(self) -> int:
        self._read("partition")
        return self._p

    def offset(self) -> int:
        self._read("offset")
        return self._o

    def timestamp(self) -> tuple[int, int]:
        self._read("timestamp")
        return (1, 1000 + self._o)

    def key(self) -> bytes:
        self._read("key")
        return b"k%d" % self._o

    def value(self) -> bytes:
        self._read("value")
        return self._v


@pytest.mark.parametrize("topic", ["events", None])
def test_a_message_batch_reads_values_now_and_other_columns_when_asked(topic: str | None) -> None:
    # Given messages of two partitions interleaved, in offset order per partition
    FakeMessage.reads = {}
    spec = [(0, 5), (1, 7), (0, 6), (1, 8), (0, 7)]
    messages = [FakeMessage("events", p, o, b"v%d" % o) for p, o in spec]
    # When they become a batch
    batch = confluent.MessageBatch(messages, topic)
    # Then values and next offsets are there, and no other column was read yet
    assert batch.values == [b"v5", b"v7", b"v6", b"v8", b"v7"]
    assert batch.next_offsets == {TopicPartition("events", 0): 8, TopicPartition("events", 1): 9}
    assert set(FakeMessage.reads) <= {"value", "partition", "offset", "topic"}
    assert "timestamp" not in FakeMessage.reads and "key" not in FakeMessage.reads
    # And one record's source costs one read per column, not a column's worth
    assert batch.offsets[2] == 6 and batch.timestamps_ms[2] == 1006 and batch.keys[2] == b"k6"
    assert FakeMessage.reads["timestamp"] == 1 and FakeMessage.reads["key"] == 1
    # And the other columns, read whole or sliced, match the messages position by position
    assert list(batch.topics) == ["events"] * 5
    assert list(batch.partitions) == [0, 1, 0, 1, 0]
    assert list(batch.offsets) == [5, 7, 6, 8, 7]
    assert list(batch.timestamps_ms) == [1005, 1007, 1006, 1008, 1007]
    assert batch.keys[1:3] == [b"k7", b"k6"]
    assert len(batch) == len(batch.keys) == 5


def test_a_message_batch_of_several_topics_keys_offsets_by_topic_and_partition() -> None:
    # Given a pattern subscription's batch: two topics with the same partition numbers
    spec = [("a", 0, 5), ("b", 0, 90), ("a", 0, 6), ("b", 1, 3), ("b", 0, 91)]
    messages = [FakeMessage(t, p, o, b"v") for t, p, o in spec]
    # When they become a batch without a single topic
    batch = confluent.MessageBatch(messages, None)
    # Then each (topic, partition) commits past its own last record
    assert batch.next_offsets == {
        TopicPartition("a", 0): 7,
        TopicPartition("b", 0): 92,
        TopicPartition("b", 1): 4,
    }
    assert list(batch.topics) == ["a", "b", "a", "b", "b"]
