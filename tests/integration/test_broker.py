"""The local brokers' process control (pause, resume, kill, restart), for fault-injection tests.

Each test starts a broker of its own, of the run's kind, so the session's broker is untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from detector.stream.broker import BrokerKind, LocalBroker, local_broker

pytestmark = pytest.mark.broker


@pytest.fixture
def own_broker(broker_kind: BrokerKind) -> Iterator[LocalBroker]:
    with local_broker(broker_kind) as b:
        yield b


def read_all(bootstrap: str, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    try:
        return [m.value for m in consumer]
    finally:
        consumer.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_paused_broker_answers_nothing_until_resumed(own_broker: LocalBroker) -> None:
    # Given a broker with a topic and a connected producer
    own_broker.create_topics(["p"])
    producer = KafkaProducer(bootstrap_servers=own_broker.bootstrap, max_block_ms=2000)
    try:
        producer.send("p", b"before").get(30)
        # When the broker is paused, then a send is not acknowledged
        own_broker.pause()
        future = producer.send("p", b"during")
        with pytest.raises(KafkaTimeoutError):
            future.get(3)
        # When it is resumed, then the pending send goes through and new ones too
        own_broker.resume()
        producer.send("p", b"after").get(60)
    finally:
        producer.close(5)
    assert read_all(own_broker.bootstrap, "p")[-1] == b"after"


def test_a_killed_broker_is_gone_and_starts_again_on_its_port(own_broker: LocalBroker) -> None:
    # Given a running broker
    pid, port = own_broker.pid, own_broker.port
    assert pid is not None
    # When it is SIGKILLed, then its process is gone
    own_broker.kill()
    assert not own_broker.running and not pid_alive(pid)
    # When it is started again, then it answers on the same port from a new process
    own_broker.start()
    assert own_broker.port == port and own_broker.pid != pid
    own_broker.create_topics(["k"])
    producer = KafkaProducer(bootstrap_servers=own_broker.bootstrap)
    producer.send("k", b"x").get(60)
    producer.close(5)


@pytest.mark.needs_broker("kafka", reason="Tansu keeps its log in memory: a restart starts empty")
def test_records_survive_a_kill_and_a_restart(own_broker: LocalBroker) -> None:
    # Given records acknowledged by the broker (acks=all)
    own_broker.create_topics(["durable"], partitions=2)
    producer = KafkaProducer(bootstrap_servers=own_broker.bootstrap, acks="all")
    sent = [f"r{i}".encode() for i in range(50)]
    for r in sent:
        producer.send("durable", r)
    producer.flush(30)
    producer.close(5)
    # When the broker is killed and started, then restarted gracefully
    own_broker.kill()
    own_broker.start()
    own_broker.restart()
    # Then every acknowledged record is still there
    assert sorted(read_all(own_broker.bootstrap, "durable")) == sorted(sent)
