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
from detector.features.temporal import derived_names
from detector.settings import FeatureSettings


@dataclass(frozen=True)
class FeatureSpec:
    """Numeric features in order, categorical features with their known categories."""

    numeric: tuple[str, ...]
    categorical: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    log1p: frozenset[str] = frozenset()
    # Base feature -> window of its per-entity temporal features (their names are in numeric).
    temporal: Mapping[str, int] = field(default_factory=dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Bundles pickled before a field existed load with its default (format upgrades).
        self.__dict__.update({"categorical": {}, "log1p": frozenset(), "temporal": {}, **state})

    def __post_init__(self) -> None:
        names = list(self.numeric) + list(self.categorical)
        if not names:
            raise DataError("the feature spec has no features")
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise DataError(f"features listed twice: {sorted(dupes)}")
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
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            numeric=tuple(data["numeric"]),
            categorical={k: tuple(v) for k, v in data.get("categorical", {}).items()},
            log1p=frozenset(data.get("log1p", ())),
            temporal=dict(data.get("temporal", {})),
        )


def infer_spec(
    rows: Sequence[Mapping[str, Any]],
    settings: FeatureSettings,
    exclude: Sequence[str] = (),
) -> FeatureSpec:
    """Build the spec from configured names, or infer it from the data's types.

    A column is numeric when every present value is a number; otherwise categorical
    with the categories seen, sorted so the encoding does not depend on row order.
    """
    skip = set(exclude) | set(settings.exclude)
    seen: dict[str, None] = {}
    for row in rows[:1000]:
        for key in row:
            if key not in skip:
                seen.setdefault(key, None)
    temporal = derived_names(settings.temporal)
    numeric = (
        list(settings.numeric) + [t for t in temporal if t not in settings.numeric]
        if settings.numeric is not None
        else None
    )
    categorical = list(settings.categorical) if settings.categorical is not None else None
    if numeric is None or categorical is None:
        inferred_num, inferred_cat = [], []
        for name in seen:
            if (numeric is not None and name in numeric) or (
                categorical is not None and name in categorical
            ):
                continue
            values = [r.get(name) for r in rows]
            present = [v for v in values if v is not None and v != ""]
            if not present:
                raise DataError(f"column {name!r} has no values; exclude it (features.exclude)")
            if all(isinstance(v, int | float) for v in present):
                inferred_num.append(name)
            else:
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
    log1p = set(settings.log1p)
    if not log1p and settings.auto_log1p_skew is not None:
        log1p = heavy_tailed(rows, numeric, settings.auto_log1p_skew)
    return FeatureSpec(
        numeric=tuple(numeric),
        categorical=cats,
        log1p=frozenset(log1p),
        temporal=dict(settings.temporal),
    )


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
        if col.size < 3 or col.min() < 0 or col.std() == 0:
            continue
        if float(skew(col)) > min_skew:
            out.add(name)
    return out
