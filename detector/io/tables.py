"""Training and scoring files: CSV or JSON lines -> rows of feature values.

CSV: one row per event. A column is numeric when every present cell parses as a number;
empty cells and the usual missing-value tokens (``MISSING_TOKENS``) are missing values,
left to ``features.missing_policy``. Numbers written with a decimal comma (``0,38``) are
read when ``features.decimal = ","`` and refused with that hint otherwise, never taken for
categories. A column of mostly numbers with other text in it is refused naming the column,
a few offending cells with their line numbers, and the fixes (declare it, clean it).
Other columns are text (categorical). JSON lines: one event per line, the same shape as stream events
(parsed by the same ``EventParser``); a line that is not a valid event is kept as a row
error so `detector score` reports it in place instead of shifting later rows.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import BadEventError, DataError
from detector.events import EventParser
from detector.features.temporal import TemporalPlan
from detector.settings import FeatureSettings, Settings

# Cells that mean "no value" in CSV files written by spreadsheets, pandas, R and databases
# (compared case-insensitively, surrounding spaces ignored). Only in a column that is
# otherwise numeric: in a text column "none" or "-" may well be a category.
MISSING_TOKENS = frozenset(
    {"", "na", "n/a", "#n/a", "nan", "null", "none", "nil", "missing", "-", "--", "?"}
)
# A column whose present cells are at least this share numbers is taken for a numeric
# column with bad cells, not for a categorical one: codes mixed with a few words are rarer
# than numbers with a few typos, and `features.categorical` settles the other case.
MOSTLY_NUMERIC_SHARE = 0.5
# Offending cells quoted in an error: enough to see the pattern, short enough to read.
SAMPLE_CELLS = 5
_DECIMAL_COMMA = re.compile(r"\s*[+-]?(\d+,\d*|,\d+)([eE][+-]?\d+)?\s*")


@dataclass
class Table:
    rows: list[dict[str, Any]]  # feature name -> value, one per input row, in order
    labels: np.ndarray | None = None
    entities: list[str | None] | None = None
    times: list[Any] | None = None
    errors: dict[int, tuple[str, str]] = field(default_factory=dict)  # row -> (reason, message)
    # Column -> what reading did with it beyond the obvious (role, decimal comma, cells read
    # as missing); training shows it in its column table.
    notes: dict[str, str] = field(default_factory=dict)


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


def read_table(
    path: str | Path,
    settings: Settings,
    label_column: str | None = None,
    *,
    for_training: bool = False,
) -> Table:
    """Rows of the file. ``for_training`` refuses columns of mixed numbers and text.

    When scoring, the model decides each feature's type: a text cell in a numeric feature
    makes its row a ``bad_value`` error, reported in place.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p} does not exist")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_jsonl(p, settings, label_column)
    return _read_csv(p, settings, label_column, for_training)


def _read_csv(
    path: Path, settings: Settings, label_column: str | None, for_training: bool
) -> Table:
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
    roles = {
        settings.training.timestamp_column: "event time column (training.timestamp_column)",
        settings.training.entity_column: "entity id column (training.entity_column)",
    }
    if label_column:
        roles[label_column] = "label column (training.label_column)"
    columns: dict[str, list[Any]] = {}
    notes: dict[str, str] = {}
    problems: list[_Column] = []
    for j, name in enumerate(header):
        cells = [line[j] for line in body]
        if name in roles:
            columns[name] = cells
            notes[name] = roles[name]
            continue
        col = read_column(name, cells, settings.features)
        columns[name] = col.values
        if col.note:
            notes[name] = col.note
        if col.wrong_decimal or (for_training and col.mixed):
            problems.append(col)
    if problems:
        raise DataError(_explain(path, problems, header, columns, roles, settings.features))
    feature_names = [h for h in header if h not in roles]
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
        notes=notes,
    )


@dataclass
class _Column:
    """One CSV column as read: its values and what was found on the way."""

    name: str
    values: list[Any]
    numeric: bool
    note: str = ""
    n_present: int = 0
    n_numbers: int = 0
    offending: list[tuple[int, str]] = field(default_factory=list)  # (row index, cell)
    n_offending: int = 0
    wrong_decimal: bool = False  # numbers written with the other decimal separator
    mixed: bool = False  # mostly numbers, with other text, and not declared


def _is_missing(cell: str) -> bool:
    return cell == "" or cell.strip().lower() in MISSING_TOKENS


def _number(cell: str, decimal: str) -> float | None:
    if decimal == ",":
        if "." in cell or cell.count(",") > 1:
            return None  # "1.234,5": thousands separators are not read (ambiguous)
        cell = cell.replace(",", ".")
    try:
        return float(cell)
    except ValueError:
        return None


def read_column(name: str, cells: Sequence[str], features: FeatureSettings) -> _Column:
    """Numbers (missing -> None) or text (empty -> None) for one CSV column."""
    declared_numeric = features.numeric is not None and name in features.numeric
    declared_text = name in (features.categorical or ()) or name in features.exclude
    if features.decimal == "." and "" not in cells:
        try:  # the common case, vectorized: a clean numeric column
            return _Column(name, np.asarray(cells, dtype=np.float64).tolist(), True)
        except ValueError:
            pass
    text = [c if c != "" else None for c in cells]
    if declared_text:
        return _Column(name, text, False)
    missing = [_is_missing(c) for c in cells]
    numbers = [
        None if m else _number(c, features.decimal) for c, m in zip(cells, missing, strict=True)
    ]
    bad = [
        (i, c)
        for i, (c, m, v) in enumerate(zip(cells, missing, numbers, strict=True))
        if not m and v is None
    ]
    n_missing = sum(missing)
    n_present = len(cells) - n_missing
    n_numbers = n_present - len(bad)
    notes = []
    if features.decimal == "," and any(
        "," in c for c, v in zip(cells, numbers, strict=True) if v is not None
    ):
        notes.append('decimal comma (features.decimal = ",")')
    if n_missing and not bad:
        token_cells = [c.strip() for c, m in zip(cells, missing, strict=True) if m and c != ""]
        if token_cells:
            kinds = sorted(set(token_cells))
            shown = ", ".join(repr(t) for t in kinds[:6]) + (", ..." if len(kinds) > 6 else "")
            notes.append(f"{len(token_cells)} cells read as missing ({shown})")
    col = _Column(
        name, numbers, not bad, "; ".join(notes), n_present, n_numbers, bad[:SAMPLE_CELLS], len(bad)
    )
    if not bad:
        if n_present == 0:  # all empty: no type to find; inference names it
            col.values, col.numeric = text, False
        return col
    if declared_numeric:
        col.note = "; ".join([*notes, f"{len(bad)} text cells read as missing (features.numeric)"])
        return col
    col.values, col.numeric = text, False
    col.note = ""
    other = "," if features.decimal == "." else "."
    if all(_number(c, other) is not None for _, c in bad) and (
        features.decimal == "," or all(_DECIMAL_COMMA.fullmatch(c) for _, c in bad)
    ):
        col.wrong_decimal = True
    elif n_numbers >= MOSTLY_NUMERIC_SHARE * n_present and n_numbers > 0:
        col.mixed = True
    return col


def _explain(
    path: Path,
    problems: Sequence[_Column],
    header: Sequence[str],
    columns: dict[str, list[Any]],
    roles: dict[str, str],
    features: FeatureSettings,
) -> str:
    """One paragraph per refused column, then the fixes with the names filled in."""
    lines = []
    for col in problems:
        sample = ", ".join(f"line {i + 2}: {c!r}" for i, c in col.offending)
        if col.n_offending > len(col.offending):
            sample = f"{col.n_offending} such cells: {sample}, ..."
        if col.wrong_decimal and features.decimal == ".":
            lines.append(
                f"column {col.name!r} holds numbers written with a decimal comma ({sample}): "
                'set features.decimal = "," (or train --decimal ,) to read them as numbers; '
                "if the comma separates thousands instead, remove it from the data"
            )
        elif col.wrong_decimal:
            lines.append(
                f"column {col.name!r} holds numbers written with a decimal point ({sample}) "
                'but features.decimal is ",": a file uses one separator; set '
                'features.decimal = "." or convert the column'
            )
        else:
            lines.append(
                f"column {col.name!r} is mostly numbers ({col.n_numbers} of {col.n_present} "
                f"present cells) but holds text ({sample})"
            )
    if any(c.mixed for c in problems):
        numeric = [
            h
            for h in header
            if h not in roles
            and h not in features.exclude
            and (
                any(isinstance(v, float) for v in columns[h][:1000])
                or h in {c.name for c in problems}
            )
        ]
        listed = ", ".join(f'"{h}"' for h in numeric)
        shown = ", ".join(sorted(t for t in MISSING_TOKENS if t))
        lines.append(
            f"fix one of: declare the numeric columns, features.numeric = [{listed}] "
            "(text cells in them are then read as missing values); "
            'set features.decimal = "," if the numbers use a decimal comma; '
            "declare a column categorical (features.categorical) if it is one; "
            f"or clean the data. Empty cells and {shown} (any case) are already read as missing"
        )
    return f"{path}: " + "\n".join(lines)


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


def with_temporal(table: Table, windows: TemporalPlan) -> Table:
    """The table with per-entity temporal features added (no-op without windows).

    Without an entity column the whole file is one series (one sensor, one machine), as
    the service treats events without an entity: each row continues the previous one.
    """
    if not windows:
        return table
    from detector.features.temporal import augment_offline

    rows, _ = augment_offline(table.rows, table.entities, table.times, windows)
    return Table(
        rows=rows,
        labels=table.labels,
        entities=table.entities,
        times=table.times,
        errors=table.errors,
    )
