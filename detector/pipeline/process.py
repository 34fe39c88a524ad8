"""One batch of records -> scores, alerts and dead letters, without Kafka.

    parse -> temporal features -> score -> alerts (cooldown, documents, size check)
          -> dead letters (bytes untouched, or cut to fit, reason kept)

A record can only become a score or a dead letter: every exception raised while handling
one record is confined to it and makes it a dead letter with a stable ``Reason``. The
vectorized stages (parse, score) run once per batch; if one raises for the whole batch,
it is run again record by record, so one poisoned record costs only itself. Should
anything else raise for the batch (a bug here), the whole batch is processed again one
record at a time, each failure a dead letter ``internal_error`` (that retry may find
the cooldown and temporal state already updated by the failed attempt: a bug path only).

The service calls ``process`` and only sends what it returns; the property tests and the
benchmark call it directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
import orjson

from detector.events import EventParser, ParsedBatch, describe, format_time_ms
from detector.model.scorer import Scorer, ScoreResult
from detector.pipeline.batches import (
    Alert,
    BatchOutcome,
    PipelineState,
    Records,
    RecordSlice,
    ScoredBatch,
)
from detector.pipeline.letters import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DeadLetter,
    Message,
    dead_letter,
    message_bytes,
    usable_bytes,
)
from detector.pipeline.reasons import Reason
from detector.pipeline.results import concat_results, empty_result, failed_row
from detector.stream.alerts import Cooldown, Source, build_alert

log = logging.getLogger(__name__)

Stage = Callable[[str], AbstractContextManager[None]]


@contextmanager
def _no_timing(_: str) -> Iterator[None]:
    yield


def process(
    records: Records,
    scorer: Scorer,
    state: PipelineState,
    *,
    max_request_size: int = DEFAULT_MAX_MESSAGE_BYTES,
    now_ms: float | None = None,
    stage: Stage = _no_timing,
) -> BatchOutcome:
    """Handle one batch. Never raises for anything a record holds.

    ``max_request_size`` is the producer's: no message returned is larger. ``stage``
    times the stages (the service's metrics); ``now_ms`` is the alerts' ``detected_at``.
    """
    limit = usable_bytes(max_request_size)
    detected_ms = now_ms if now_ms is not None else time.time() * 1000.0
    before = _evictions(state)
    try:
        outcome = _process(records, scorer, state, limit, detected_ms, stage)
    except Exception as exc:
        log.exception("a batch of %d failed as a whole; retrying record by record", len(records))
        outcome = _process_each(records, scorer, state, limit, detected_ms, describe(exc))
        outcome.retried.insert(0, "batch")
    outcome.evictions = {k: v - before[k] for k, v in _evictions(state).items()}
    return outcome


def _evictions(state: PipelineState) -> dict[str, int]:
    return {
        "cooldown": state.cooldown.evictions,
        "temporal": state.temporal.evictions if state.temporal is not None else 0,
    }


def _process(
    records: Records,
    scorer: Scorer,
    state: PipelineState,
    limit: int,
    detected_ms: float,
    stage: Stage,
) -> BatchOutcome:
    n = len(records)
    retried: list[str] = []
    with stage("parse"):
        parsed = _parse(state.parser, records, retried)
        errors: dict[int, tuple[str, str]] = dict(parsed.errors)
        times: list[int] = parsed.event_times_ms  # type: ignore[assignment]
        if None in times:  # events without a time take the record's timestamp
            times = [
                t if t is not None else ts
                for t, ts in zip(parsed.event_times_ms, records.timestamps_ms, strict=True)
            ]
        if not errors:  # the common case: every record is an event
            index = list(range(n))
            entities, values = parsed.entities, parsed.values
        else:
            index = [i for i in range(n) if i not in errors]
            entities = [parsed.entities[i] for i in index]
            times = [times[i] for i in index]
            values = [parsed.values[i] for i in index]

    warmup = 0
    if state.temporal is not None and index:
        with stage("temporal"):
            before = state.temporal.warmup_rows
            values, failed = state.temporal.augment_checked(entities, values)
            warmup = state.temporal.warmup_rows - before
            if failed:
                for row, what in failed.items():
                    errors[index[row]] = (
                        Reason.INTERNAL_ERROR,
                        f"temporal features failed: {what}",
                    )
                keep = [r for r in range(len(index)) if r not in failed]
                index = [index[r] for r in keep]
                entities = [entities[r] for r in keep]
                times = [times[r] for r in keep]
                values = [values[r] for r in keep]

    with stage("score"):
        result = _score(scorer, values, retried)
        for row, (reason, message) in result.errors.items():
            errors[index[row]] = (reason, message)

    sb = ScoredBatch(records, index, entities, times, values, result, scorer.version)
    with stage("alerts"):
        alerts, suppressed = _alerts(
            records, sb, scorer, state.cooldown, limit, detected_ms, errors
        )
    dead = [
        dead_letter(
            pos,
            records.values[pos],
            records.keys[pos],
            source_of(records, pos),
            Reason.of(reason),
            message,
            limit,
        )
        for pos, (reason, message) in sorted(errors.items())
    ]
    sb.dead_letters = [(d.position, d.reason, d.message) for d in dead]
    sb.alerts = [a.doc for a in alerts]
    return BatchOutcome(n, sb, alerts, dead, suppressed, warmup, retried)


def _parse(parser: EventParser, records: Records, retried: list[str]) -> ParsedBatch:
    try:
        return parser.parse_batch(records.values)
    except Exception:
        log.warning("batch parse failed; parsing record by record", exc_info=True)
        retried.append("parse")
        return parser.parse_each(records.values)


def _score(scorer: Scorer, values: list[dict[str, Any]], retried: list[str]) -> ScoreResult:
    try:
        return scorer.score(values)
    except Exception:
        log.warning("batch scoring failed; scoring %d rows one by one", len(values), exc_info=True)
        retried.append("score")
    parts = []
    for row in values:
        try:
            parts.append(scorer.score([row]))
        except Exception as exc:
            parts.append(failed_row(scorer, f"scoring failed: {describe(exc)}"))
    return concat_results(parts, scorer)


def _alerts(
    records: Records,
    sb: ScoredBatch,
    scorer: Scorer,
    cooldown: Cooldown,
    limit: int,
    detected_ms: float,
    errors: dict[int, tuple[str, str]],
) -> tuple[list[Alert], int]:
    """Alert messages of the alerting rows; a row whose alert fails becomes a dead letter."""
    result = sb.result
    names = scorer.spec.features
    alerts: list[Alert] = []
    suppressed = 0
    detected_at = format_time_ms(detected_ms)  # the batch's, formatted once
    for row in result.alerting.tolist():
        pos = sb.scored_index[row]
        try:
            entity, event_ms = sb.entities[row], sb.event_times_ms[row]
            send, held = cooldown.admit(entity, int(result.severity[row]), event_ms)
            if not send:
                suppressed += 1
                continue
            doc = build_alert(
                result,
                row,
                source=source_of(records, pos),
                entity=entity,
                event_time_ms=event_ms,
                model_version=sb.model_version,
                feature_names=names,
                missing=result.feature_missing[row],
                detected_at=detected_at,
                suppressed_count=held,
            )
            value = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
            key = entity.encode() if entity is not None else records.keys[pos]
        except Exception as exc:
            errors[pos] = (Reason.INTERNAL_ERROR, f"building its alert failed: {describe(exc)}")
            demote(result, row)
            continue
        size = message_bytes(value, key, None)
        if size > limit:
            errors[pos] = (
                Reason.ALERT_TOO_LARGE,
                f"its alert is {size} bytes with its key (the entity id), over the producer's "
                f"limit of {limit}: shorten the entity id or the categorical values",
            )
            demote(result, row)
            continue
        alerts.append(Alert(pos, result.severity_name(row), doc, Message(value, key)))
    return alerts, suppressed


def demote(result: ScoreResult, row: int) -> None:
    """Mark a scored row as not scored (it became a dead letter after scoring)."""
    result.log_likelihood[row] = np.nan
    result.percentile[row] = np.nan
    result.threshold[row] = np.nan
    result.severity[row] = 0


def source_of(records: Records, pos: int) -> Source:
    return Source(
        records.topics[pos],
        records.partitions[pos],
        records.offsets[pos],
        records.timestamps_ms[pos],
    )


def _process_each(
    records: Records,
    scorer: Scorer,
    state: PipelineState,
    limit: int,
    detected_ms: float,
    why: str,
) -> BatchOutcome:
    """The last resort: every record on its own; one that still raises is a dead letter."""
    parts: list[BatchOutcome] = []
    for i in range(len(records)):
        one = RecordSlice.of(records, i, i + 1)
        try:
            parts.append(_process(one, scorer, state, limit, detected_ms, _no_timing))
        except Exception as exc:
            message = f"processing failed: {describe(exc)} (its batch failed with {why})"
            letter = dead_letter(
                0,
                one.values[0],
                one.keys[0],
                source_of(one, 0),
                Reason.INTERNAL_ERROR,
                message,
                limit,
            )
            failed = ScoredBatch(one, [], [], [], [], empty_result(scorer), scorer.version)
            parts.append(BatchOutcome(1, failed, [], [letter]))
    return _merge(records, parts, scorer)


def _merge(records: Records, parts: list[BatchOutcome], scorer: Scorer) -> BatchOutcome:
    """Outcomes of one-record slices, as the outcome of the whole batch (positions shifted)."""
    index: list[int] = []
    entities: list[str | None] = []
    times: list[int] = []
    values: list[dict[str, Any]] = []
    results: list[ScoreResult] = []
    alerts: list[Alert] = []
    dead: list[DeadLetter] = []
    out = BatchOutcome(len(records), None, alerts, dead)  # type: ignore[arg-type]
    for pos, part in enumerate(parts):
        sb = part.scored
        index += [pos + i for i in sb.scored_index]
        entities += sb.entities
        times += sb.event_times_ms
        values += sb.values
        results.append(sb.result)
        for a in part.alerts:
            a.position += pos
            alerts.append(a)
        for d in part.dead_letters:
            d.position += pos
            dead.append(d)
        out.suppressed += part.suppressed
        out.temporal_warmup_rows += part.temporal_warmup_rows
    results = [r for r in results if r.log_likelihood.shape[0]]
    merged = concat_results(results, scorer)
    out.scored = ScoredBatch(records, index, entities, times, values, merged, scorer.version)
    out.scored.alerts = [a.doc for a in alerts]
    out.scored.dead_letters = [(d.position, d.reason, d.message) for d in dead]
    return out
