"""The retraining window: the newest samples the services published, aged by event time.

Samples messages (``detector.drift.Sampler``) hold rows with their values, entity, event
time, whether they alerted and the model version of the day. ``read_window`` reads the
samples topic up to the moment it started; ``age_window`` keeps the most recent span.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from kafka import TopicPartition

from detector.settings import Settings
from detector.stream.clients import make_reader

log = logging.getLogger(__name__)


@dataclass
class SampleRow:
    values: dict[str, Any]
    entity: str | None
    event_time_ms: int | None
    alerted: bool
    model_version: str | None


@dataclass
class AgedWindow:
    rows: list[SampleRow]  # sorted by event time (rows without one first)
    newest_ms: float | None  # the event time the age is measured from
    too_old: int  # rows left out: older than window_max_age_s before newest_ms
    future_dated: int  # rows left out: stamped beyond now + window_max_future_s


def read_window(settings: Settings, now_ms: float | None = None) -> AgedWindow:
    """The newest ``window_max_samples`` rows of the samples topic, aged by ``age_window``.

    ``now_ms`` (default: the clock) only marks which stamps are in the future; see
    ``age_window`` for why the age of a sample is not measured against it.
    """
    cfg = settings.retrain
    now_ms = time.time() * 1000.0 if now_ms is None else now_ms
    consumer = make_reader(settings.kafka)
    window: deque[SampleRow] = deque(maxlen=cfg.window_max_samples)
    try:
        topic = settings.kafka.samples_topic
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return AgedWindow([], None, 0, 0)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        # Read up to the moment the run started: a live service keeps appending samples, and
        # end_offsets() is not reliable on every broker, so record timestamps mark the end.
        # (Both are the wall clock of the moment of writing/reading, never an event time.)
        started_ms = time.time() * 1000.0
        caught_up: set[TopicPartition] = set()
        idle_since = time.monotonic()
        while len(caught_up) < len(tps) and time.monotonic() - idle_since < cfg.poll_timeout_s:
            polled = consumer.poll(timeout_ms=200)
            if not polled:
                continue
            idle_since = time.monotonic()
            for tp, records in polled.items():
                for rec in records:
                    if rec.timestamp >= started_ms:
                        caught_up.add(tp)
                        consumer.pause(tp)
                        break
                    window.extend(_rows_of(rec.value))
    finally:
        consumer.close()
    aged = age_window(list(window), cfg.window_max_age_s, cfg.window_max_future_s, now_ms)
    if aged.future_dated:
        log.warning(
            "left %d samples stamped more than retrain.window_max_future_s = %.0f s after the "
            "clock out of the window (a producer's clock is wrong?)",
            aged.future_dated,
            cfg.window_max_future_s,
        )
    return aged


def age_window(
    rows: list[SampleRow], max_age_s: float, max_future_s: float, now_ms: float
) -> AgedWindow:
    """Keep the rows within ``max_age_s`` of the newest sample's event time.

    Why the newest sample and not the clock: the window is "the most recent span of the
    stream the service saw". Measured against the clock, a user who backfills or replays
    history (a year-old CSV streamed today, a topic re-read after an outage, a demo whose
    simulated fleet started on a fixed date) gets every sample dropped and a retrain
    refused for "0 samples". Measured against the newest event time, the window is the
    same whenever it is read, and the age bound still does its job: a stream with an
    old stretch in the topic trains on its last ``max_age_s`` only.

    Future-dated stamps: a producer with a wrong clock can stamp a reading a year ahead.
    Taken as "the newest", that one row would age every other row out of the window. So
    the clock is used for this one question only (no event can be processed before it
    happens): a row stamped more than ``max_future_s`` after ``now_ms`` is a clock error
    and is left out, counted in ``future_dated``. A stamp within that tolerance may set
    the newest time, which then ages out at most ``max_future_s`` of the oldest rows.
    Rows with no event time are kept (they cannot be aged).
    """
    limit_ms = now_ms + max_future_s * 1000.0
    future = [r for r in rows if r.event_time_ms is not None and r.event_time_ms > limit_ms]
    plausible = [r for r in rows if r.event_time_ms is None or r.event_time_ms <= limit_ms]
    times = [r.event_time_ms for r in plausible if r.event_time_ms is not None]
    if not times:
        return AgedWindow(plausible, None, 0, len(future))
    newest_ms = float(max(times))
    oldest_ms = newest_ms - max_age_s * 1000.0
    kept = [r for r in plausible if r.event_time_ms is None or r.event_time_ms >= oldest_ms]
    kept.sort(key=lambda r: r.event_time_ms if r.event_time_ms is not None else -np.inf)
    return AgedWindow(kept, newest_ms, len(plausible) - len(kept), len(future))


def _rows_of(raw: bytes) -> Iterator[SampleRow]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("skipping an unreadable samples message (%d bytes)", len(raw))
        return
    version = doc.get("model_version")
    for r in doc.get("rows", []):
        yield SampleRow(
            r.get("values") or {},
            r.get("entity"),
            r.get("event_time_ms"),
            bool(r.get("alerted")),
            version,
        )
