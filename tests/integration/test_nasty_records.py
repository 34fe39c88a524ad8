"""The nasty-record corpus through the real broker and the real service (issue 16, items 1-2).

Every record of ``tests/data/nasty_records.json`` is produced to the input topic, followed
by good events; the service must end each one where the corpus says (scored, alerted, or
a dead letter with that reason, byte-identical or cut with headers saying so), commit
everything, and still be scoring the good events after them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from detector.metrics import current
from detector.stream.alerts import (
    ORIGINAL_SHA256_HEADER,
    ORIGINAL_SIZE_HEADER,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_TOPIC_HEADER,
    TRUNCATED_HEADER,
)
from tests.integration.streams import (
    committed_total,
    events_with_anomalies,
    read_topic,
    service_thread,
    settings_for_test,
    train_and_publish,
    wait_for,
)
from tests.nasty import ALERT, SCORED, load_corpus

pytestmark = pytest.mark.broker

# The input topic must take the corpus's 10 MB record (Kafka's default is 1 MiB).
INPUT_MAX_MESSAGE_BYTES = 32 << 20
PRODUCER_LIMIT_BYTES = 1_048_576  # the service's producer: kafka-python's default


def produce_in_order(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> list[int]:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        max_request_size=INPUT_MAX_MESSAGE_BYTES,
        max_in_flight_requests_per_connection=1,  # keeps offsets in corpus order
        linger_ms=5,
    )
    try:
        futures = [producer.send(topic, value=v, key=k) for k, v in records]
        producer.flush(60)
        return [f.get(timeout=60).offset for f in futures]
    finally:
        producer.close()


def test_every_nasty_record_ends_where_the_corpus_says_and_the_service_keeps_going(
    broker, tmp_path: Path
) -> None:
    # Given a model, an input topic that accepts 32 MiB records, and the corpus followed
    # by 300 good events (3 of them anomalies)
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
    train_and_publish(settings)
    topic = settings.kafka.input_topic
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.create_topics(
            [
                NewTopic(
                    topic, 1, 1, topic_configs={"max.message.bytes": str(INPUT_MAX_MESSAGE_BYTES)}
                )
            ]
        )
    finally:
        admin.close()
    corpus = load_corpus()
    good, _ = events_with_anomalies(300, seed=7)
    offsets = produce_in_order(
        broker.bootstrap_servers,
        topic,
        [(c.key, c.value) for c in corpus] + [(None, g) for g in good],
    )
    total = len(offsets)

    # When the service consumes them all
    with service_thread(settings) as service:
        wait_for(lambda: service.consumed >= total, 120, "every record consumed")
        wait_for(
            lambda: (
                committed_total(broker.bootstrap_servers, settings.kafka.group_id, topic) == total
            ),
            60,
            "every offset committed",
        )
        m = service.metrics
        assert current(m.consumed) == total
        assert (
            current(m.events.labels("scored")) + current(m.events.labels("dead_lettered")) == total
        )
    dead = read_topic(broker.bootstrap_servers, settings.kafka.dead_letter_topic)
    alerts = [
        orjson.loads(r.value)
        for r in read_topic(broker.bootstrap_servers, settings.kafka.alerts_topic)
    ]

    # Then each corpus record ended where the corpus says ...
    ends: dict[int, str] = {}
    letters = {}
    for r in dead:
        h = {k: v for k, v in r.headers}
        assert h[SOURCE_TOPIC_HEADER] == topic.encode()
        offset = int(h[SOURCE_OFFSET_HEADER])
        assert offset not in letters, "a record was dead-lettered twice"
        letters[offset] = (r, h)
        ends[offset] = h[REASON_HEADER].decode()
    for a in alerts:
        ends.setdefault(a["source"]["offset"], ALERT)
    got = {c.name: ends.get(offsets[i], SCORED) for i, c in enumerate(corpus)}
    assert got == {c.name: c.expect for c in corpus}
    # ... every dead letter is the record's bytes untouched, or cut to fit with headers
    for i, c in enumerate(corpus):
        if offsets[i] not in letters:
            continue
        r, h = letters[offsets[i]]
        original = c.value or b""
        if TRUNCATED_HEADER not in h:
            assert (r.value, r.key) == (c.value, c.key), c.name
            continue
        assert len(original) + len(c.key or b"") > PRODUCER_LIMIT_BYTES, c.name
        assert original.startswith(r.value or b"") and len(r.value or b"") < PRODUCER_LIMIT_BYTES
        assert h[ORIGINAL_SIZE_HEADER] == str(len(original)).encode()
        assert h[ORIGINAL_SHA256_HEADER] == hashlib.sha256(original).hexdigest().encode()
    truncated = {
        c.name
        for i, c in enumerate(corpus)
        if TRUNCATED_HEADER in letters.get(offsets[i], (None, {}))[1]
    }
    assert truncated == {"3 MiB record", "10 MB string", "empty value, 2 MiB key"}
    # ... and every good event after the corpus was scored: none was dead-lettered
    assert not [o for o in offsets[len(corpus) :] if o in letters]
