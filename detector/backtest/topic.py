"""A topic's records between two times as a stream: history to backtest, straight from Kafka.

Records are read without a consumer group from the first offset at or after ``from_ms``
(``offsets_for_times``, record timestamps) up to the first record stamped after ``to_ms``
or the end of each partition (asked again when reached: some brokers report a stale end),
or ``idle_s`` without records.
Their bytes are streamed untouched, with their own topic, partition, offset and timestamp,
so a record that is not an event becomes the same dead letter and an alert the same id as
in the live service. The event time is the event's own (``event.time_key``), else the
record's timestamp; the stream is in event-time order.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from detector.backtest.source import Stream
from detector.errors import BadEventError, DataError
from detector.events import EventParser
from detector.settings import Settings

# Reading stops after this long without a record from any partition still being read.
IDLE_S = 5.0


def read_topic(
    settings: Settings,
    topic: str,
    from_ms: float | None = None,
    to_ms: float | None = None,
    idle_s: float = IDLE_S,
) -> Stream:
    from kafka import TopicPartition

    from detector.stream.clients import make_reader

    consumer = make_reader(settings.kafka)
    records: list[Any] = []
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise DataError(f"topic {topic!r} does not exist on {settings.kafka.bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        if from_ms is not None:
            found = consumer.offsets_for_times({tp: int(from_ms) for tp in tps})
            for tp in tps:
                hit = found.get(tp)
                starts[tp] = hit.offset if hit is not None else ends[tp]
        todo = set()
        for tp in tps:
            consumer.seek(tp, starts[tp])
            if starts[tp] < ends[tp]:
                todo.add(tp)
            else:
                consumer.pause(tp)
        last = time.monotonic()
        while todo and time.monotonic() - last < idle_s:
            polled = consumer.poll(timeout_ms=200)
            if polled:
                last = time.monotonic()
            for tp, batch in polled.items():
                for rec in batch:
                    if to_ms is not None and rec.timestamp > to_ms:
                        todo.discard(tp)
                        consumer.pause(tp)
                        break
                    records.append(rec)
                    if rec.offset + 1 >= ends[tp]:
                        # Some brokers (Tansu) report a stale end for a while: ask again.
                        ends[tp] = max(ends[tp], consumer.end_offsets([tp])[tp])
                        if rec.offset + 1 >= ends[tp]:
                            todo.discard(tp)
                            consumer.pause(tp)
    finally:
        consumer.close()
    if not records:
        raise DataError(f"no records in {topic!r} in the time range asked for")
    return stream_of_records(records, settings)


def stream_of_records(records: list[Any], settings: Settings) -> Stream:
    """Consumer records -> a stream in event-time order (parsing only for times and rows)."""
    parser = EventParser(settings.event)
    times: list[int] = []
    rows: list[dict[str, Any]] = []
    entities: list[str | None] = []
    for rec in records:
        try:
            event = parser.parse(rec.value)
        except BadEventError:
            times.append(int(rec.timestamp))
            rows.append({})
            entities.append(None)
            continue
        times.append(event.event_time_ms if event.event_time_ms is not None else int(rec.timestamp))
        rows.append(event.values)
        entities.append(event.entity)
    t = np.asarray(times, dtype=np.int64)
    backwards = int(np.sum(np.diff(t) < 0)) if t.size > 1 else 0
    order = np.argsort(t, kind="stable").tolist()
    return Stream(
        raws=[records[i].value or b"" for i in order],
        keys=[records[i].key for i in order],
        times_ms=t[order],
        labels=None,
        entities=[entities[i] for i in order],
        rows=[rows[i] for i in order],
        file_rows=np.asarray(order, dtype=np.int64),
        time_column=settings.event.time_key,
        out_of_order_rows=backwards,
        coordinates=[
            (records[i].topic, records[i].partition, records[i].offset, int(records[i].timestamp))
            for i in order
        ],
    )
