"""Training and scoring files: CSV or JSON lines -> rows of feature values.

CSV: one row per event; a column is numeric when every non-empty cell parses as a number,
otherwise categorical. JSON lines: one event per line, the same shape as stream events
(parsed by the same ``EventParser``); a line that is not a valid event is kept as a row
error so `detector score` reports it in place instead of shifting later rows.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import BadEventError, DataError
from detector.events import EventParser
from detector.settings import Settings


@dataclass
class Table:
    rows: list[dict[str, Any]]  # feature name -> value, one per input row, in order
    labels: np.ndarray | None = None
    entities: list[str | None] | None = None
    times: list[Any] | None = None
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)  # row -> (reason, message)


def _parse_label(value: Any, where: str) -> int:
    if value is None or value == "":
        raise DataError(f"{where}: empty label")
    if isinstance(value, bool):
        return int(value)
    try:
        return 0 if float(value) == 0 else 1
    except (TypeError, ValueError):
        text = str(value).strip().lower()
        if text in ("normal", "false"):
            return 0
        if text in ("anomaly", "attack", "true"):
            return 1
        raise DataError(f"{where}: label {value!r} is not 0/1") from None


def read_table(path: str | Path, settings: Settings, label_column: str | None = None) -> Table:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p} does not exist")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(p, settings, label_column)
    return _read_csv(p, settings, label_column)


def _read_csv(path: Path, settings: Settings, label_column: str | None) -> Table:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path} is empty") from None
        body = list(reader)
    if not body:
        raise DataError(f"{path} has a header but no rows")
    width = len(header)
    for n, line in enumerate(body, start=2):
        if len(line) != width:
            raise DataError(f"{path}:{n}: {len(line)} cells, the header has {width}")
    if label_column is not None and label_column not in header:
        raise DataError(f"--label-column {label_column!r} is not a column of {path}: {header}")
    meta = {settings.training.timestamp_column, settings.training.entity_column}
    if label_column:
        meta.add(label_column)
    columns: dict[str, list[Any]] = {}
    for j, name in enumerate(header):
        cells = [line[j] for line in body]
        if name in meta:
            columns[name] = cells
            continue
        columns[name] = _numeric_or_text(cells)
    feature_names = [h for h in header if h not in meta]
    feature_cols = [columns[h] for h in feature_names]
    rows = [dict(zip(feature_names, vals, strict=True)) for vals in zip(*feature_cols, strict=True)]
    labels = None
    if label_column:
        labels = np.array(
            [_parse_label(v, f"{path}:{i + 2}") for i, v in enumerate(columns[label_column])],
            dtype=np.int8,
        )
    entity_col = settings.training.entity_column
    time_col = settings.training.timestamp_column
    return Table(
        rows=rows,
        labels=labels,
        entities=[c or None for c in columns[entity_col]] if entity_col in columns else None,
        times=columns.get(time_col),
    )


def _numeric_or_text(cells: Sequence[str]) -> list[Any]:
    """Numbers when every non-empty cell is one (empty -> None), else strings (empty -> None)."""
    present = [c for c in cells if c != ""]
    try:
        values = np.asarray(present, dtype=np.float64)
    except ValueError:
        return [c if c != "" else None for c in cells]
    it = iter(values.tolist())
    return [next(it) if c != "" else None for c in cells]


def _read_jsonl(path: Path, settings: Settings, label_column: str | None) -> Table:
    parser = EventParser(settings.event)
    table = Table(rows=[], entities=[], times=[])
    labels: list[int] = []
    with path.open("rb") as fh:
        for n, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            i = len(table.rows)
            try:
                event = parser.parse(line)
            except BadEventError as exc:
                table.rows.append({})
                table.errors[i] = (exc.reason, f"line {n}: {exc.message}")
                assert table.entities is not None and table.times is not None
                table.entities.append(None)
                table.times.append(None)
                labels.append(0)
                continue
            table.rows.append(event.values)
            assert table.entities is not None and table.times is not None
            table.entities.append(event.entity)
            table.times.append(event.event_time_ms)
            if label_column:
                if label_column not in event.raw:
                    raise DataError(f"{path}:{n}: no {label_column!r} key")
                labels.append(_parse_label(event.raw[label_column], f"{path}:{n}"))
    if not table.rows:
        raise DataError(f"{path} has no events")
    if label_column:
        table.labels = np.array(labels, dtype=np.int8)
    return table


def with_temporal(table: Table, windows: dict[str, int]) -> Table:
    """The table with per-entity temporal features added (no-op without windows)."""
    if not windows:
        return table
    from detector.features.temporal import augment_offline

    if table.entities is None:
        raise DataError(
            "features.temporal needs an entity column (training.entity_column) to know whose history a row continues"
        )
    rows, _ = augment_offline(table.rows, table.entities, table.times, windows)
    return Table(
        rows=rows,
        labels=table.labels,
        entities=table.entities,
        times=table.times,
        errors=table.errors,
    )
