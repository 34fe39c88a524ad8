"""A data file as a stream: rows -> encoded events in event-time order, labels beside them.

The file is read with the same reader as ``detector train`` and ``detector evaluate``
(``detector.io.tables``), so columns mean the same thing. Each row becomes the event
``detector produce`` would send for it (features under ``event.values_key``, the entity
under ``event.entity_key``, the time under ``event.time_key``), as bytes, and is later
parsed by the service's own parser.

The event time comes from a time column: ``--time-column NAME``, or the first column
named like one (``TIME_COLUMN_NAMES``, or ``training.timestamp_column``) whose cells
read as times. Without one, rows are a second apart in file order from a fixed origin
(``NO_TIME_ORIGIN_MS``), so a run is the same every day. A few cells that are not times
take the time of the row before (counted in ``times_filled``); many of them stop with
the column and examples. Rows are streamed in event-time order (a stable sort: ties and
rows whose clock went back keep file order; ``out_of_order_rows`` counts the latter).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from detector.errors import BadEventError, DataError
from detector.events import format_time_ms, parse_time_ms
from detector.io.tables import Table, read_table
from detector.settings import Settings

# Column names taken for the event time when no --time-column is given (case-insensitive).
TIME_COLUMN_NAMES = ("timestamp", "time", "ts", "datetime", "date_time", "date", "event_time")
# A time column may have this share of cells that are not times (they take the previous
# row's time); beyond it the column is not a clock and the run stops saying so.
MAX_BAD_TIME_SHARE = 0.05
# Rows of a file without a time column: one second apart from 2000-01-01T00:00:00Z.
NO_TIME_ORIGIN_MS = 946_684_800_000
NO_TIME_STEP_MS = 1_000
# Epoch numbers below this are seconds (as in detector.events); an event carries ms.
_EPOCH_MS_CUTOFF = 1e11
NONE = "none"  # --time-column none: file order, no time column


@dataclass
class Stream:
    """The file's rows in event-time order: encoded events and what the report needs."""

    raws: list[bytes]
    keys: list[bytes | None]
    times_ms: np.ndarray  # int64, non-decreasing
    labels: np.ndarray | None  # int8 0/1 aligned with raws, or None
    entities: list[str | None]
    rows: list[dict[str, Any]]  # the feature values (for training on the first part)
    file_rows: np.ndarray  # each event's 0-based data row in the file
    time_column: str | None
    times_filled: int = 0
    out_of_order_rows: int = 0
    invalid_rows: int = 0  # JSON lines that are not events (left out, counted)
    notes: dict[str, str] = field(default_factory=dict)
    # Read from a topic: each record's (topic, partition, offset, timestamp ms), so alert ids
    # are the live service's. None for a file (offsets are then positions in the stream).
    coordinates: list[tuple[str, int, int, int]] | None = None

    def __len__(self) -> int:
        return len(self.raws)

    def part(self, start: int, stop: int) -> Stream:
        return Stream(
            self.raws[start:stop],
            self.keys[start:stop],
            self.times_ms[start:stop],
            None if self.labels is None else self.labels[start:stop],
            self.entities[start:stop],
            self.rows[start:stop],
            self.file_rows[start:stop],
            self.time_column,
            # What reading the file found describes the file, whichever part is streamed.
            times_filled=self.times_filled,
            out_of_order_rows=self.out_of_order_rows,
            invalid_rows=self.invalid_rows,
            notes=self.notes,
            coordinates=None if self.coordinates is None else self.coordinates[start:stop],
        )


def _header(path: Path) -> list[str]:
    with path.open(newline="") as fh:
        try:
            return next(csv.reader(fh))
        except StopIteration:
            raise DataError(f"{path} is empty") from None


def _time_ms(cell: Any) -> int | None:
    """A cell as epoch ms: ISO 8601, or epoch seconds / ms as a number or numeric text."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return None
    value: Any = cell
    if isinstance(cell, str):
        text = cell.strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            value = text
    try:
        return parse_time_ms(value, "time")
    except BadEventError:
        return None


def detect_time_column(path: Path, settings: Settings, asked: str | None) -> str | None:
    """The time column of a CSV file: the one asked for, or the first that reads as times."""
    header = _header(path)
    if asked is not None:
        if asked.lower() == NONE:
            return None
        if asked not in header:
            raise DataError(f"--time-column {asked!r} is not a column of {path}: {header}")
        return asked
    lowered = {h.lower(): h for h in header}
    names = [settings.training.timestamp_column.lower(), *TIME_COLUMN_NAMES]
    candidates = [lowered[n] for n in dict.fromkeys(names) if n in lowered]
    if not candidates:
        return None
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        head = [row for _, row in zip(range(200), reader, strict=False)]
    for name in candidates:
        cells = [r.get(name) for r in head]
        read = [_time_ms(c) for c in cells]
        # Numbers count too ("time" = epoch seconds); text that is not times does not.
        if read and sum(t is not None for t in read) >= (1 - MAX_BAD_TIME_SHARE) * len(read):
            return name
    return None


def read_stream(
    path: str | Path,
    settings: Settings,
    label_column: str | None,
    time_column: str | None = None,
) -> Stream:
    """The file as a stream in event-time order (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p} does not exist")
    jsonl = p.suffix.lower() in (".jsonl", ".ndjson", ".json")
    column: str | None
    if jsonl:
        table = read_table(p, settings, label_column)
        column = settings.event.time_key
        times = [t if isinstance(t, int) else None for t in (table.times or [])]
    else:
        column = detect_time_column(p, settings, time_column)
        if column == label_column and column is not None:
            raise DataError(f"--time-column and --label-column are both {column!r}")
        training = settings.training.model_copy(
            update={"timestamp_column": column or settings.training.timestamp_column}
        )
        table = read_table(p, settings.model_copy(update={"training": training}), label_column)
        times = [_time_ms(c) for c in table.times] if column and table.times is not None else []
    return _to_stream(p, table, settings, column if times else None, times)


def _to_stream(
    path: Path, table: Table, settings: Settings, column: str | None, times: list[int | None]
) -> Stream:
    n = len(table.rows)
    keep = [i for i in range(n) if i not in table.errors]
    filled = 0
    if column is None:
        t = NO_TIME_ORIGIN_MS + NO_TIME_STEP_MS * np.arange(n, dtype=np.int64)
    else:
        bad = [i for i in keep if times[i] is None]
        if len(bad) > MAX_BAD_TIME_SHARE * max(1, len(keep)):
            cells = table.times or []
            shown = ", ".join(f"line {i + 2}: {cells[i]!r}" for i in bad[:5])
            raise DataError(
                f"{path}: {len(bad)} of {len(keep)} cells of the time column {column!r} are not "
                f"times ({shown}); expected ISO 8601 or epoch seconds/milliseconds. Name the "
                "right column with --time-column, or stream in file order with --time-column none"
            )
        filled = len(bad)
        t = np.zeros(n, dtype=np.int64)
        last: int | None = next((times[i] for i in keep if times[i] is not None), 0)
        for i in range(n):
            ti = times[i]
            if ti is None:
                ti = last
            t[i] = ti if ti is not None else 0
            last = ti
    order = np.array(keep, dtype=np.int64)
    backwards = int(np.sum(np.diff(t[order]) < 0)) if order.size > 1 else 0
    order = order[np.argsort(t[order], kind="stable")]
    cfg = settings.event
    raws: list[bytes] = []
    keys: list[bytes | None] = []
    entities: list[str | None] = []
    rows: list[dict[str, Any]] = []
    for i in order.tolist():
        values = table.rows[i]
        clean = {k: v for k, v in values.items() if not (isinstance(v, float) and math.isnan(v))}
        entity = table.entities[i] if table.entities is not None else None
        event: dict[str, Any] = {}
        if entity is not None:
            event[cfg.entity_key] = entity
        ms = int(t[i])
        # The parser reads small epoch numbers as seconds: those times travel as ISO 8601.
        event[cfg.time_key] = ms if abs(ms) >= _EPOCH_MS_CUTOFF else format_time_ms(ms)
        if cfg.values_key:
            event[cfg.values_key] = clean
        else:
            event.update(clean)
        raws.append(orjson.dumps(event))
        keys.append(entity.encode() if entity is not None else None)
        entities.append(entity)
        rows.append(values)
    return Stream(
        raws=raws,
        keys=keys,
        times_ms=t[order],
        labels=None if table.labels is None else table.labels[order],
        entities=entities,
        rows=rows,
        file_rows=order,
        time_column=column,
        times_filled=filled,
        out_of_order_rows=backwards,
        invalid_rows=len(table.errors),
        notes=table.notes,
    )
