"""Alerts and dead letters: the two things the service writes back to Kafka.

An alert's id is derived from the source topic, partition and offset only, so an event
redelivered after a crash (at-least-once) yields the same id and consumers de-duplicate.
A dead letter carries the original bytes and key untouched; why and where from travel in
headers. The JSON Schema of the alert is ``detector/schemas/alert.schema.json``.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.events import format_time_ms, format_time_ms_or_none
from detector.model.scorer import ScoreResult

# A fixed namespace: alert ids stay stable across versions and replicas.
ALERT_ID_NAMESPACE = uuid.UUID("6f1c2d3e-8a4b-4c5d-9e6f-7a8b9c0d1e2f")
SCHEMA_VERSION = 1

REASON_HEADER = "detector.reason"
MESSAGE_HEADER = "detector.message"
SOURCE_TOPIC_HEADER = "detector.source.topic"
SOURCE_PARTITION_HEADER = "detector.source.partition"
SOURCE_OFFSET_HEADER = "detector.source.offset"
SOURCE_TIMESTAMP_HEADER = "detector.source.timestamp_ms"
# Only on a dead letter cut to fit the producer's max_request_size (see detector.pipeline).
TRUNCATED_HEADER = "detector.truncated"  # what was cut: "value" or "key,value"
ORIGINAL_SIZE_HEADER = "detector.original.size"  # the value's size in bytes, before the cut
ORIGINAL_SHA256_HEADER = "detector.original.sha256"  # hex sha256 of the whole original value
ORIGINAL_KEY_SIZE_HEADER = "detector.original.key_size"  # only when the key was cut too
ORIGINAL_KEY_SHA256_HEADER = "detector.original.key_sha256"


_NAMESPACE_BYTES = ALERT_ID_NAMESPACE.bytes


def alert_id(topic: str, partition: int, offset: int) -> str:
    """``str(uuid.uuid5(ALERT_ID_NAMESPACE, "topic/partition/offset"))``, without building
    the ``UUID`` object (most of uuid5's cost; a unit test holds the two equal)."""
    digest = bytearray(
        hashlib.sha1(_NAMESPACE_BYTES + f"{topic}/{partition}/{offset}".encode()).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class Source:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


def build_alert(
    result: ScoreResult,
    i: int,
    *,
    source: Source,
    entity: str | None,
    event_time_ms: int | None,
    model_version: str,
    feature_names: tuple[str, ...],
    missing: np.ndarray | None = None,
    suppressed_count: int = 0,
    detected_at: str | None = None,
) -> dict[str, Any]:
    """The alert document for row ``i`` of a scored batch.

    ``detected_at``: the detection time, formatted (a batch formats its own once); None
    is now.
    """
    ll = float(result.log_likelihood[i])
    pct = float(result.percentile[i])
    if detected_at is None:
        detected_at = format_time_ms(time.time() * 1000.0)
    event_ms = event_time_ms if event_time_ms is not None else source.timestamp_ms
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "alert_id": alert_id(source.topic, source.partition, source.offset),
        "entity": entity,
        # A producer may stamp any int64 on a record: one no datetime holds is rendered null.
        "event_time": format_time_ms_or_none(event_ms),
        "detected_at": detected_at,
        "severity": result.severity_name(i),
        "log_likelihood": ll,
        "anomaly_score": -ll,
        "threshold": float(result.threshold[i]),
        "percentile": pct,
        "p_value": pct / 100.0,
        "model_version": model_version,
        "top_features": [
            {"feature": c.feature, "contribution": c.contribution, "value": c.value}
            for c in result.top_features.get(i, [])
        ],
        "mahalanobis_sq": result.mahalanobis_sq.get(i),
        "missing_features": [f for f, m in zip(feature_names, missing, strict=True) if m]
        if missing is not None
        else [],
        "unknown_categories": int(result.unknown_categories[i]),
        "suppressed_count": suppressed_count,
        "source": {
            "topic": source.topic,
            "partition": source.partition,
            "offset": source.offset,
            "timestamp_ms": source.timestamp_ms,
        },
    }
    return doc


def dead_letter_headers(source: Source, reason: str, message: str) -> list[tuple[str, bytes]]:
    return [
        (REASON_HEADER, reason.encode()),
        (MESSAGE_HEADER, message.encode("utf-8", "replace")[:4096]),
        (SOURCE_TOPIC_HEADER, source.topic.encode()),
        (SOURCE_PARTITION_HEADER, str(source.partition).encode()),
        (SOURCE_OFFSET_HEADER, str(source.offset).encode()),
        (
            SOURCE_TIMESTAMP_HEADER,
            str(source.timestamp_ms if source.timestamp_ms is not None else "").encode(),
        ),
    ]


class Cooldown:
    """Per-entity alert cooldown: repeats of the same or lower severity are counted, not sent.

    Times are event times (ms), so a replay after a crash makes the same decisions. At most
    ``max_entities`` are remembered, least recently alerted evicted first, in O(1) per
    alert: an evicted entity's next alert is sent even inside its cooldown (a duplicate at
    worst, never a lost alert), and ``evictions`` counts how often that could happen.
    """

    def __init__(self, cooldown_s: float, max_entities: int = 100_000) -> None:
        self.window_ms = cooldown_s * 1000.0
        self.max_entities = max_entities
        # entity -> [time sent, severity, alerts held since]; order = least recent first.
        self._last: OrderedDict[str, list[float]] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._last)

    @property
    def enabled(self) -> bool:
        return self.window_ms > 0

    def admit(self, entity: str | None, severity: int, time_ms: float) -> tuple[bool, int]:
        """(send?, suppressed count to report on this alert)."""
        if not self.enabled or entity is None:
            return True, 0
        last = self._last.get(entity)
        if last is not None:
            self._last.move_to_end(entity)
            if time_ms - last[0] < self.window_ms and severity <= last[1]:
                last[2] += 1
                return False, 0
            held = int(last[2])
            last[0], last[1], last[2] = time_ms, severity, 0
            return True, held
        self._last[entity] = [time_ms, severity, 0]
        if len(self._last) > self.max_entities:
            self._last.popitem(last=False)
            self.evictions += 1
        return True, 0
