"""What the pipeline reads and returns: records as columns, per-entity state, outcomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detector.events import EventParser
from detector.features.temporal import TemporalState
from detector.model.scorer import ScoreResult
from detector.pipeline.letters import DeadLetter, Message
from detector.records import Records
from detector.stream.alerts import Cooldown


@dataclass(slots=True)
class RecordSlice:
    """Some records of a batch, for the record-by-record retry (and tests)."""

    topics: list[str]
    partitions: list[int]
    offsets: list[int]
    timestamps_ms: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def of(cls, records: Records, start: int, stop: int) -> RecordSlice:
        return cls(
            list(records.topics[start:stop]),
            list(records.partitions[start:stop]),
            list(records.offsets[start:stop]),
            list(records.timestamps_ms[start:stop]),
            list(records.keys[start:stop]),
            records.values[start:stop],
        )


@dataclass
class PipelineState:
    """What outlives a batch: the parser's configuration, the cooldown, temporal state."""

    parser: EventParser
    cooldown: Cooldown
    temporal: TemporalState | None = None


@dataclass
class ScoredBatch:
    """What one batch became; handed to observers (drift window, demo, benchmarks).

    Rows are the scored ones (``scored_index`` gives their positions in ``batch``); a row
    dead-lettered after scoring (its alert could not be built) has a NaN log-likelihood.
    """

    batch: Any  # the Records
    scored_index: list[int]
    entities: list[str | None]
    event_times_ms: list[int]
    values: list[dict[str, Any]]
    result: ScoreResult
    model_version: str
    alerts: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[tuple[int, str, str]] = field(
        default_factory=list
    )  # (record pos, reason, msg)


@dataclass(slots=True)
class Alert:
    position: int
    severity: str
    doc: dict[str, Any]
    out: Message


@dataclass
class BatchOutcome:
    """Everything to send for one batch, and what to count. n = scored + dead letters."""

    n: int
    scored: ScoredBatch
    alerts: list[Alert]
    dead_letters: list[DeadLetter]
    suppressed: int = 0
    temporal_warmup_rows: int = 0
    retried: list[str] = field(default_factory=list)  # stages re-run record by record
    # Entities forgotten to keep state bounded, by state ("cooldown", "temporal").
    evictions: dict[str, int] = field(default_factory=dict)

    @property
    def n_scored(self) -> int:
        return self.n - len(self.dead_letters)
