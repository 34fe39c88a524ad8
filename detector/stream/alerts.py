"""Alerts and dead letters: the two things the service writes back to Kafka.

An alert's id is derived from the source topic, partition and offset only, so an event
redelivered after a crash (at-least-once) yields the same id and consumers de-duplicate.
A dead letter carries the original bytes and key untouched; why and where from travel in
headers. The JSON Schema of the alert is ``detector/schemas/alert.schema.json``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.events import format_time_ms
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


def alert_id(topic: str, partition: int, offset: int) -> str:
    return str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{topic}/{partition}/{offset}"))


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
    detected_ms: float | None = None,
    suppressed_count: int = 0,
) -> dict[str, Any]:
    """The alert document for row ``i`` of a scored batch."""
    ll = float(result.log_likelihood[i])
    pct = float(result.percentile[i])
    detected = detected_ms if detected_ms is not None else time.time() * 1000.0
    event_ms = event_time_ms if event_time_ms is not None else source.timestamp_ms
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "alert_id": alert_id(source.topic, source.partition, source.offset),
        "entity": entity,
        "event_time": format_time_ms(event_ms) if event_ms is not None else None,
        "detected_at": format_time_ms(detected),
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

    Times are event times (ms), so a replay after a crash makes the same decisions.
    """

    def __init__(self, cooldown_s: float, max_entities: int = 100_000) -> None:
        self.window_ms = cooldown_s * 1000.0
        self.max_entities = max_entities
        self._last: dict[str, tuple[float, int]] = {}  # entity -> (time sent, severity)
        self._held: dict[str, int] = {}

    @property
    def enabled(self) -> bool:
        return self.window_ms > 0

    def admit(self, entity: str | None, severity: int, time_ms: float) -> tuple[bool, int]:
        """(send?, suppressed count to report on this alert)."""
        if not self.enabled or entity is None:
            return True, 0
        last = self._last.get(entity)
        if last is not None and time_ms - last[0] < self.window_ms and severity <= last[1]:
            self._held[entity] = self._held.get(entity, 0) + 1
            return False, 0
        self._last[entity] = (time_ms, severity)
        if len(self._last) > self.max_entities:
            self._evict(time_ms)
        return True, self._held.pop(entity, 0)

    def _evict(self, now_ms: float) -> None:
        # Entities whose cooldown has expired carry no state worth keeping.
        for entity in [e for e, (t, _) in self._last.items() if now_ms - t >= self.window_ms]:
            self._last.pop(entity, None)
