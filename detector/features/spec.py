"""The feature spec: which features a model reads, in which order, and how each is encoded.

Stored in the model bundle, so the order of features comes from the model and never from
an event's key order. Numeric features become one column each (optionally ``log1p``
first); a categorical feature becomes one one-hot column per category seen in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import skew

from detector.errors import DataError
from detector.features.temporal import (
    DEFAULT_FORMS,
    DEFAULT_HALFLIFE_EVENTS,
    FORMS,
    TemporalPlan,
    derived_names,
)
from detector.settings import FeatureSettings


@dataclass(frozen=True)
class FeatureSpec:
    """Numeric features in order, categorical features with their known categories."""

    numeric: tuple[str, ...]
    categorical: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    log1p: frozenset[str] = frozenset()
    # Base feature -> window of its per-entity temporal features (their names are in numeric).
    temporal: Mapping[str, int] = field(default_factory=dict)
    # Which temporal forms, and the baseline's half-life of the ``dev`` form.
    temporal_forms: tuple[str, ...] = DEFAULT_FORMS
    temporal_halflife_events: float = DEFAULT_HALFLIFE_EVENTS
    temporal_peer: bool = False  # relative to the other entities (features.temporal_peer)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Bundles pickled before a field existed load with its default (format upgrades).
        self.__dict__.update(
            {
                "categorical": {},
                "log1p": frozenset(),
                "temporal": {},
                "temporal_forms": DEFAULT_FORMS,
                "temporal_halflife_events": DEFAULT_HALFLIFE_EVENTS,
                "temporal_peer": False,
                **state,
            }
        )

    @property
    def temporal_plan(self) -> TemporalPlan:
        """What the temporal state must derive for this model (empty: no temporal features)."""
        return TemporalPlan(
            dict(self.temporal),
            tuple(self.temporal_forms),
            self.temporal_halflife_events,
            self.temporal_peer,
        )

    def __post_init__(self) -> None:
        names = list(self.numeric) + list(self.categorical)
        if not names:
            raise DataError("the feature spec has no features")
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise DataError(f"features listed twice: {sorted(dupes)}")
        if not set(self.temporal_forms) <= set(FORMS) or not self.temporal_halflife_events >= 1:
            raise DataError(
                f"temporal forms {list(self.temporal_forms)} / half-life "
                f"{self.temporal_halflife_events}: forms are {list(FORMS)}, the half-life >= 1"
            )
        unknown_log = set(self.log1p) - set(self.numeric)
        if unknown_log:
            raise DataError(
                f"features.log1p names non-numeric or unknown features: {sorted(unknown_log)}"
            )

    @property
    def features(self) -> tuple[str, ...]:
        """Original feature names: numeric first, then categorical."""
        return self.numeric + tuple(self.categorical)

    @property
    def columns(self) -> tuple[str, ...]:
        """Encoded column names: numeric, then ``feature=category`` one-hot columns."""
        cols = list(self.numeric)
        for name, cats in self.categorical.items():
            cols.extend(f"{name}={c}" for c in cats)
        return tuple(cols)

    @property
    def column_feature(self) -> tuple[int, ...]:
        """For each encoded column, the index of the feature it belongs to."""
        owner = list(range(len(self.numeric)))
        for j, cats in enumerate(self.categorical.values(), start=len(self.numeric)):
            owner.extend([j] * len(cats))
        return tuple(owner)

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": list(self.numeric),
            "categorical": {k: list(v) for k, v in self.categorical.items()},
            "log1p": sorted(self.log1p),
            "temporal": dict(self.temporal),
            "temporal_forms": list(self.temporal_forms),
            "temporal_halflife_events": self.temporal_halflife_events,
            "temporal_peer": self.temporal_peer,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            numeric=tuple(data["numeric"]),
            categorical={k: tuple(v) for k, v in data.get("categorical", {}).items()},
            log1p=frozenset(data.get("log1p", ())),
            temporal=dict(data.get("temporal", {})),
            temporal_forms=tuple(data.get("temporal_forms", DEFAULT_FORMS)),
            temporal_halflife_events=float(
                data.get("temporal_halflife_events", DEFAULT_HALFLIFE_EVENTS)
            ),
            temporal_peer=bool(data.get("temporal_peer", False)),
        )


# A text column with a distinct value in every row is an id even below
# features.max_categories, once there are enough rows for that to mean something.
ID_MIN_ROWS = 50
# A column of mostly numbers (this share of its present values) with some text is taken
# for a numeric column with bad cells (same rule as CSV reading, detector.io.tables).
MOSTLY_NUMERIC_SHARE = 0.5
SAMPLE_VALUES = 5


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float)


def _id_like(distinct: int, present: int, max_categories: int) -> bool:
    return distinct > max_categories or (distinct == present and present >= ID_MIN_ROWS)


def infer_spec(
    rows: Sequence[Mapping[str, Any]],
    settings: FeatureSettings,
    exclude: Sequence[str] = (),
) -> FeatureSpec:
    """Build the spec from configured names, or infer it from the data's types.

    A column is numeric when every present value is a number; otherwise categorical
    with the categories seen, sorted so the encoding does not depend on row order. An
    inferred text column that looks like an id (more than ``max_categories`` distinct
    values, or a distinct value in every row) is left out; ``describe_columns`` says so.
    A column of mostly numbers with some text in it is refused, naming a few cells.
    """
    skip = set(exclude) | set(settings.exclude)
    plan = settings.temporal_plan
    # Read only for their temporal forms: the raw values are not features themselves.
    raw_dropped = set() if settings.temporal_raw else set(plan.windows)
    skip |= raw_dropped
    seen = _seen_columns(rows, skip)
    temporal = derived_names(plan)
    numeric = (
        [f for f in settings.numeric if f not in raw_dropped]
        + [t for t in temporal if t not in settings.numeric]
        if settings.numeric is not None
        else None
    )
    categorical = list(settings.categorical) if settings.categorical is not None else None
    declared_cat = set(categorical or ())
    if numeric is None or categorical is None:
        inferred_num, inferred_cat = [], []
        for name in seen:
            if (numeric is not None and name in numeric) or name in declared_cat:
                continue
            values = [r.get(name) for r in rows]
            present = [v for v in values if v is not None and v != ""]
            if not present:
                raise DataError(f"column {name!r} has no values; exclude it (features.exclude)")
            n_numbers = sum(1 for v in present if _is_number(v))
            if n_numbers == len(present):
                inferred_num.append(name)
                continue
            if n_numbers >= MOSTLY_NUMERIC_SHARE * len(present):
                bad = [
                    (i, v)
                    for i, v in enumerate(values)
                    if v not in (None, "") and not _is_number(v)
                ]
                sample = ", ".join(f"row {i + 1}: {v!r}" for i, v in bad[:SAMPLE_VALUES])
                raise DataError(
                    f"column {name!r} is mostly numbers ({n_numbers} of {len(present)} present "
                    f"values) but holds other values: {sample} ({len(bad)} such values); "
                    f"declare it numeric (features.numeric = [...], every numeric column listed) "
                    f"or categorical (features.categorical), or clean the data "
                    f"(a missing value in an event is null or an absent key)"
                )
            distinct = len({str(v) for v in present})
            if categorical is None and _id_like(distinct, len(present), settings.max_categories):
                continue  # an id: excluded, and shown as such in the column table
            inferred_cat.append(name)
        numeric = numeric if numeric is not None else inferred_num
        categorical = categorical if categorical is not None else inferred_cat
    missing = [n for n in [*numeric, *categorical] if n not in seen]
    if missing:
        raise DataError(
            f"configured features not found in the data: {missing}; columns are {list(seen)}"
        )
    cats: dict[str, tuple[str, ...]] = {}
    for name in categorical:
        seen_values = {str(r[name]) for r in rows if r.get(name) not in (None, "")}
        if len(seen_values) > settings.max_categories:
            raise DataError(
                f"categorical column {name!r} has {len(seen_values)} distinct values "
                f"(features.max_categories = {settings.max_categories}); is it an id? exclude it"
            )
        cats[name] = tuple(sorted(seen_values))
    if not numeric and not cats and seen:
        raise DataError(
            f"no features left: every column looks like an id ({list(seen)}); declare the "
            "features (features.numeric, features.categorical)"
        )
    log1p = set(settings.log1p)
    if not log1p and settings.auto_log1p_skew is not None:
        log1p = heavy_tailed(rows, numeric, settings.auto_log1p_skew)
    return FeatureSpec(
        numeric=tuple(numeric),
        categorical=cats,
        log1p=frozenset(log1p - raw_dropped),
        temporal=dict(plan.windows),
        temporal_forms=plan.forms,
        temporal_halflife_events=plan.halflife_events,
        temporal_peer=plan.peer,
    )


def _seen_columns(rows: Sequence[Mapping[str, Any]], skip: set[str]) -> dict[str, None]:
    seen: dict[str, None] = {}
    for row in rows[:1000]:
        for key in row:
            if key not in skip:
                seen.setdefault(key, None)
    return seen


# Keys of each entry of the training summary's "columns" table. Stable: tools read them.
COLUMN_TABLE_KEYS = ("column", "type", "why", "missing_cells", "levels", "transform")


def describe_columns(
    spec: FeatureSpec,
    rows: Sequence[Mapping[str, Any]],
    settings: FeatureSettings,
    *,
    exclude: Sequence[str] = (),
    notes: Mapping[str, str] | None = None,
    fixed: bool = False,
) -> list[dict[str, Any]]:
    """What training did with each column: type, why, missing cells, levels, transform.

    ``notes`` come from the file reader (the entity and time columns, decimal commas,
    cells read as missing); ``fixed`` means the spec was given (retraining keeps the
    current model's) rather than inferred.
    """
    notes = dict(notes or {})
    names = list(_seen_columns(rows, set()))
    in_rows = set(names)
    names += [n for n in spec.features if n not in names]
    names += [n for n in notes if n not in names]
    plan = spec.temporal_plan
    declared_num = set(settings.numeric or ())
    declared_cat = set(settings.categorical or ())
    table = []
    for name in names:
        values = [r.get(name) for r in rows]
        missing = sum(
            1 for v in values if v is None or v == "" or (isinstance(v, float) and v != v)
        )
        entry: dict[str, Any] = {
            "column": name,
            "type": "excluded",
            "why": "",
            "missing_cells": missing,
            "levels": None,
            "transform": None,
        }
        if name in spec.numeric:
            entry["type"] = "numeric"
            how = plan.describe(name)
            if how is not None:
                entry["why"] = how
                entry["missing_cells"] = None  # computed per entity, not read
            elif fixed:
                entry["why"] = "numeric in the current model"
            elif name in declared_num:
                entry["why"] = "listed in features.numeric"
            else:
                entry["why"] = "every present value is a number"
            if name in spec.log1p:
                entry["transform"] = "log1p"
                entry["why"] += (
                    "; log1p (features.log1p)"
                    if settings.log1p
                    else f"; log1p: heavy-tailed, skewness > features.auto_log1p_skew = {settings.auto_log1p_skew:g}"
                )
        elif name in spec.categorical:
            n = len(spec.categorical[name])
            entry.update(type="categorical", levels=n)
            source = (
                "in the current model"
                if fixed
                else "listed in features.categorical"
                if name in declared_cat
                else "text values"
            )
            entry["why"] = f"{n} levels ({source})"
        elif name not in in_rows and name in notes:  # entity, time, label: not features
            entry["why"] = notes.pop(name)
            entry["missing_cells"] = None
        elif name in exclude:
            entry["why"] = "label column"
        elif name in spec.temporal:  # not in spec.numeric: its raw value was left out
            entry["why"] = "read for its temporal features only (features.temporal_raw = false)"
        elif name in settings.exclude:
            entry["why"] = "listed in features.exclude"
        elif fixed:
            entry["why"] = "not a feature of the current model"
        else:
            present = [v for v in values if v is not None and v != ""]
            distinct = len({str(v) for v in present})
            if not all(_is_number(v) for v in present) and _id_like(
                distinct, len(present), settings.max_categories
            ):
                entry["why"] = (
                    f"excluded as id: {distinct} distinct values in {len(present)} rows "
                    f"(features.max_categories = {settings.max_categories})"
                )
            else:
                entry["why"] = "not listed in features.numeric / features.categorical"
        if name in notes:
            entry["why"] += f"; {notes[name]}"
        table.append(entry)
    return table


def heavy_tailed(
    rows: Sequence[Mapping[str, Any]], numeric: Sequence[str], min_skew: float
) -> set[str]:
    """Numeric features that are never negative and heavily right-skewed in these rows.

    Byte and packet counts span orders of magnitude; a Gaussian on their raw values gives
    components of almost no variance and astronomically low scores for ordinary rows.
    """
    out = set()
    for name in numeric:
        col = np.array(
            [v for r in rows if isinstance(v := r.get(name), int | float)], dtype=np.float64
        )
        col = col[np.isfinite(col)]
        # (min == max, not std == 0: the std of a constant 4.2 is 9e-16 in floating point,
        # and scipy's skew then warns of catastrophic cancellation)
        if col.size < 3 or col.min() < 0 or col.min() == col.max():
            continue
        if float(skew(col)) > min_skew:
            out.add(name)
    return out
