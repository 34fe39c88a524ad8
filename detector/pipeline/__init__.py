"""The per-batch path without Kafka: records in, scores, alerts and dead letters out."""

from detector.pipeline.batches import (
    Alert,
    BatchOutcome,
    PipelineState,
    Records,
    RecordSlice,
    ScoredBatch,
)
from detector.pipeline.letters import DeadLetter, Message
from detector.pipeline.process import process
from detector.pipeline.reasons import Reason

__all__ = [
    "Alert",
    "BatchOutcome",
    "DeadLetter",
    "Message",
    "PipelineState",
    "Reason",
    "RecordSlice",
    "Records",
    "ScoredBatch",
    "process",
]
