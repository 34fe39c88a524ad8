"""Event parsing: raw record bytes -> (values, entity, event time) or a typed rejection.

The same parser reads Kafka records in the service and JSON-lines files in the CLI, so an
event that scores offline scores the same way online. Every failure is a ``BadEventError``
with a stable reason code that becomes the dead letter's reason.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from detector.errors import BadEventError
from detector.settings import EventSettings

# Epoch numbers above this are taken as milliseconds, below as seconds: 1e11 s is year
# 5138, 1e11 ms is 1973, so real clocks of either unit never straddle it.
_EPOCH_MS_CUTOFF = 1e11
# The event times an alert can carry as ISO 8601: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z
# (Python's datetime range). A time outside is no clock's reading (1e15 "ms" is year 33658,
# likely microseconds); it is refused as bad_value, alerting or not, so a record's fate
# never depends on its score.
MIN_TIME_MS = -62_135_596_800_000
MAX_TIME_MS = 253_402_300_799_999

# Values quoted in messages: bounded in depth and length, so a list nested 1,000 deep or a
# 10 MB string costs a few microseconds to describe (a plain repr recursed until it failed).
_PREVIEW = reprlib.Repr()
_PREVIEW.maxlevel, _PREVIEW.maxstring, _PREVIEW.maxother = 3, 60, 60
_PREVIEW.maxlist = _PREVIEW.maxdict = 4


def preview(value: Any) -> str:
    """A short, safe repr of any parsed JSON value, for error messages."""
    try:
        return _PREVIEW.repr(value)
    except Exception:  # a message must never be what fails
        return f"<{type(value).__name__}>"


@dataclass(slots=True)
class Event:
    values: dict[str, Any]
    entity: str | None
    event_time_ms: int | None  # None: the caller falls back to the Kafka record timestamp
    raw: dict[str, Any]


def parse_time_ms(value: Any, key: str) -> int:
    """ISO 8601 string or epoch number (s or ms) -> epoch milliseconds."""
    if isinstance(value, bool):
        raise BadEventError(
            "bad_value", f"{key} = {value!r}: expected ISO 8601 or epoch milliseconds"
        )
    if isinstance(value, int | float):
        ms = value if abs(value) >= _EPOCH_MS_CUTOFF else value * 1000.0
        if not (math.isfinite(ms) and MIN_TIME_MS <= ms <= MAX_TIME_MS):
            raise BadEventError("bad_value", _out_of_range(key, value))
        return int(ms)
    if isinstance(value, str):
        try:
            ms = int(datetime.fromisoformat(value).timestamp() * 1000)
        except (ValueError, OverflowError):
            pass
        else:
            if MIN_TIME_MS <= ms <= MAX_TIME_MS:
                return ms
            raise BadEventError("bad_value", _out_of_range(key, value))
    raise BadEventError(
        "bad_value", f"{key} = {preview(value)}: expected ISO 8601 or epoch milliseconds"
    )


def _out_of_range(key: str, value: Any) -> str:
    return (
        f"{key} = {preview(value)}: out of range; expected epoch seconds or milliseconds "
        "between years 1 and 9999 (microseconds or nanoseconds? divide first)"
    )


def format_time_ms_or_none(epoch_ms: float | None) -> str | None:
    """``format_time_ms``, or None for a time no datetime can hold (a producer's timestamp)."""
    if epoch_ms is None or not MIN_TIME_MS <= epoch_ms <= MAX_TIME_MS:
        return None
    return format_time_ms(epoch_ms)


def format_time_ms(epoch_ms: float) -> str:
    """Epoch milliseconds -> ISO 8601 UTC with milliseconds and a Z, as alerts carry it."""
    return (
        datetime.fromtimestamp(epoch_ms / 1000.0, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


# Entity ids the batch fast path takes as they are (str) or with a cheap str() (int).
_FAST_ENTITY_TYPES = frozenset({str, int, type(None)})


def describe(exc: BaseException) -> str:
    """``Type: message`` of an unexpected exception, bounded, for a dead letter's message."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text[:300]}"


@dataclass(slots=True)
class ParsedBatch:
    """A batch of records, parsed; rows in ``errors`` are not events."""

    values: list[dict[str, Any]]  # aligned with the input records; {} where errors[i]
    entities: list[str | None]
    event_times_ms: list[int | None]
    errors: dict[int, tuple[str, str]]


class EventParser:
    """Parses and validates records with one event configuration."""

    def __init__(self, settings: EventSettings) -> None:
        self.values_key = settings.values_key or None
        self.entity_key = settings.entity_key
        self.time_key = settings.time_key
        self.max_bytes = settings.max_record_bytes

    def parse(self, raw: bytes | None) -> Event:
        if not raw:
            raise BadEventError("empty", "the record has no value")
        if len(raw) > self.max_bytes:
            raise BadEventError(
                "too_large",
                f"record of {len(raw)} bytes exceeds event.max_record_bytes = {self.max_bytes}",
            )
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadEventError("invalid_json", f"not valid JSON: {exc}") from None
        return self.from_object(obj)

    def parse_batch(self, raws: list[bytes | None]) -> ParsedBatch:
        """Parse a poll batch. Same results as ``parse`` record by record, much cheaper.

        The fast path is a few C-level passes over the batch; any batch holding something
        unusual (an empty or oversize record, bad JSON, a non-object, string timestamps)
        takes the record-by-record path for the rows that need it.
        """
        vk, ek, tk = self.values_key, self.entity_key, self.time_key
        if not all(raws) or max(map(len, raws), default=0) > self.max_bytes:  # type: ignore[arg-type]
            return self._parse_each(raws)
        loads = orjson.loads
        try:
            objs = [loads(r) for r in raws]  # type: ignore[arg-type]
        except orjson.JSONDecodeError:
            return self._parse_each(raws)
        if set(map(type, objs)) != {dict}:
            return self._parse_each(raws)
        values = [o.get(vk) for o in objs] if vk is not None else objs
        times = [o.get(tk) for o in objs]
        if set(map(type, values)) != {dict} or not set(map(type, times)) <= {int, type(None)}:
            return self._parse_each(raws)
        entities = [o.get(ek) for o in objs]
        if not set(map(type, entities)) <= _FAST_ENTITY_TYPES:
            return self._parse_each(raws)
        cutoff = _EPOCH_MS_CUTOFF
        times_ms = [t if t is None or abs(t) >= cutoff else t * 1000 for t in times]
        present = [t for t in times_ms if t is not None]
        if present and (min(present) < MIN_TIME_MS or max(present) > MAX_TIME_MS):
            return self._parse_each(raws)
        return ParsedBatch(
            values=values,
            entities=[e if e is None or type(e) is str else str(e) for e in entities],
            event_times_ms=times_ms,
            errors={},
        )

    def parse_each(self, raws: list[bytes | None]) -> ParsedBatch:
        """Record by record; an exception of any kind is confined to its record."""
        return self._parse_each(raws)

    def _parse_each(self, raws: list[bytes | None]) -> ParsedBatch:
        out = ParsedBatch([], [], [], {})
        for i, raw in enumerate(raws):
            try:
                event = self.parse(raw)
            except Exception as exc:
                if isinstance(exc, BadEventError):
                    out.errors[i] = (exc.reason, exc.message)
                else:  # a bug of ours, not the record's fault: still only this record's end
                    out.errors[i] = ("internal_error", f"parsing failed: {describe(exc)}")
                out.values.append({})
                out.entities.append(None)
                out.event_times_ms.append(None)
                continue
            out.values.append(event.values)
            out.entities.append(event.entity)
            out.event_times_ms.append(event.event_time_ms)
        return out

    def from_object(self, obj: Any) -> Event:
        if not isinstance(obj, dict):
            raise BadEventError(
                "not_an_object", f"expected a JSON object, got {type(obj).__name__}"
            )
        if self.values_key is not None:
            values = obj.get(self.values_key)
            if values is None:
                raise BadEventError(
                    "missing_features", f"the event has no {self.values_key!r} object"
                )
            if not isinstance(values, dict):
                raise BadEventError(
                    "not_an_object",
                    f"{self.values_key!r} must be an object, got {type(values).__name__}",
                )
        else:  # flat events: every key but the entity and the time is a candidate feature
            values = {k: v for k, v in obj.items() if k != self.entity_key and k != self.time_key}
        entity = obj.get(self.entity_key)
        if isinstance(entity, dict | list):
            raise BadEventError(
                "bad_value",
                f"{self.entity_key} = {preview(entity)}: expected a string or a number",
            )
        ts = obj.get(self.time_key)
        return Event(
            values=values,
            entity=None if entity is None else str(entity),
            event_time_ms=None if ts is None else parse_time_ms(ts, self.time_key),
            raw=obj,
        )
