"""Rows of raw values -> one float matrix in the model's column order, per batch.

Missing values (absent key, null, empty string, NaN) become NaN and are handled by the
scorer's missing-value policy; values that cannot be a feature (a string where a number
belongs, an infinity, a nested object) make the row invalid with a stable reason code, so
the service can dead-letter it and the CLI can report it. Nothing raises per row.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.events import preview
from detector.features.spec import FeatureSpec
from detector.features.temporal import derived_names
from detector.settings import FeatureSettings

_NUMBER_TYPES = frozenset({float, int})


@dataclass
class EncodedBatch:
    """The encoded batch; rows listed in ``errors`` must not be scored."""

    matrix: np.ndarray  # (n_rows, n_columns) float64, NaN = missing
    feature_missing: np.ndarray  # (n_rows, n_features) bool
    unknown_categories: np.ndarray  # (n_rows,) int: categories never seen in training
    errors: dict[int, tuple[str, str]]  # row -> (reason code, human message)

    @property
    def valid(self) -> np.ndarray:
        mask = np.ones(self.matrix.shape[0], dtype=bool)
        if self.errors:
            mask[list(self.errors)] = False
        return mask


class FeatureEncoder:
    """Encodes value mappings with a fixed spec; one instance per model version."""

    def __init__(self, spec: FeatureSpec, settings: FeatureSettings) -> None:
        self.spec = spec
        self.missing_policy = settings.missing_policy
        self.max_missing_fraction = settings.max_missing_fraction
        self._n_numeric = len(spec.numeric)
        # itemgetter of one name returns a scalar, of several a tuple: both reshape to (n, k).
        self._getter = operator.itemgetter(*spec.numeric) if spec.numeric else None
        self._log1p_cols = [i for i, n in enumerate(spec.numeric) if n in spec.log1p]
        self._category_column: list[dict[str, int]] = []
        col = self._n_numeric
        for cats in spec.categorical.values():
            self._category_column.append({c: col + i for i, c in enumerate(cats)})
            col += len(cats)
        self.n_columns = col
        temporal = set(derived_names(spec.temporal_plan))
        self._pointwise = np.array([f not in temporal for f in spec.features], dtype=bool)
        self._pointwise_names = [f for f in spec.features if f not in temporal]

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> EncodedBatch:
        n = len(rows)
        matrix = np.zeros((n, self.n_columns), dtype=np.float64)
        missing = np.zeros((n, len(self.spec.features)), dtype=bool)
        unknown = np.zeros(n, dtype=np.int64)
        errors: dict[int, tuple[str, str]] = {}

        fast = self._numeric_fast(rows)
        if fast is not None:
            matrix[:, : self._n_numeric] = fast
        for j, name in enumerate(self.spec.numeric):
            if fast is not None:
                values = fast[:, j]
            else:
                column = [row.get(name) for row in rows]
                plain: np.ndarray | None = None
                if set(map(type, column)) <= _NUMBER_TYPES:  # all plain numbers
                    try:
                        plain = np.asarray(column, dtype=np.float64)
                    except OverflowError:  # an int past float range: found by the slow path
                        plain = None
                values = plain if plain is not None else self._numeric_slow(name, column, errors)
                matrix[:, j] = values
            missing[:, j] = np.isnan(values)
            for i in np.flatnonzero(np.isinf(values)):
                errors.setdefault(
                    int(i), ("bad_value", f"{name} = {values[i]}: infinite values are not allowed")
                )
        for j in self._log1p_cols:
            name = self.spec.numeric[j]
            below = matrix[:, j] <= -1.0  # log1p(-1) is -inf: not a score either
            for i in np.flatnonzero(below):
                errors.setdefault(
                    int(i), ("bad_value", f"{name} = {matrix[i, j]}: log1p features must be > -1")
                )
            with np.errstate(invalid="ignore", divide="ignore"):
                matrix[:, j] = np.log1p(matrix[:, j])

        for k, (name, lookup) in enumerate(
            zip(self.spec.categorical, self._category_column, strict=True)
        ):
            jf = self._n_numeric + k
            cols = list(lookup.values())
            for r, row in enumerate(rows):
                value = row.get(name)
                if value is None or value == "":
                    missing[r, jf] = True
                    matrix[r, cols] = np.nan
                    continue
                if isinstance(value, bool) or not isinstance(value, str | int):
                    errors.setdefault(
                        r, ("bad_value", f"{name} = {preview(value)}: expected a category (string)")
                    )
                    continue
                hit = lookup.get(str(value))
                if hit is None:
                    unknown[r] += 1  # encoded as all-zero one-hot: "unknown", scored, counted
                else:
                    matrix[r, hit] = 1.0

        self._apply_missing_policy(missing, errors)
        return EncodedBatch(matrix, missing, unknown, errors)

    def _numeric_fast(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray | None:
        """All numeric features of all rows in one C-level pass, when every one is a plain number.

        None when any is absent, null, a string, a bool or nested: the per-feature path then
        finds and names it.
        """
        if not self._n_numeric or not rows:
            return None
        get = self._getter
        assert get is not None
        try:
            block = np.array([get(row) for row in rows])
        except Exception:  # absent keys, ragged or deeply nested values: the slow path names them
            return None
        # (lists as values make a block of another shape: the slow path names them)
        if (
            block.dtype.kind not in "fi"
            or block.ndim > 2
            or block.size != len(rows) * self._n_numeric
        ):
            return None
        return block.reshape(len(rows), self._n_numeric).astype(np.float64, copy=False)

    @staticmethod
    def _numeric_slow(
        name: str, column: list[Any], errors: dict[int, tuple[str, str]]
    ) -> np.ndarray:
        values = np.empty(len(column), dtype=np.float64)
        for i, v in enumerate(column):
            if v is None or v == "":
                values[i] = math.nan
            elif isinstance(v, int | float):  # bool is an int: a 0/1 flag is a fine feature
                try:
                    values[i] = float(v)
                except OverflowError:  # an int past 1.8e308: the infinity check refuses it
                    values[i] = math.inf
            else:
                values[i] = math.nan
                errors.setdefault(i, ("bad_value", f"{name} = {preview(v)}: expected a number"))
        return values

    def _apply_missing_policy(
        self, missing: np.ndarray, errors: dict[int, tuple[str, str]]
    ) -> None:
        # Temporal features of a warming-up entity are missing by design: never a reason to
        # refuse the row, and not counted against max_missing_fraction.
        missing = missing[:, self._pointwise]
        n_missing = missing.sum(axis=1)
        if not n_missing.any():
            return
        n_features = missing.shape[1]
        limit = 0 if self.missing_policy == "reject" else self.max_missing_fraction * n_features
        too_many = (n_missing > limit) | (n_missing == n_features)
        for i in np.flatnonzero(too_many):
            absent = [f for f, m in zip(self._pointwise_names, missing[i], strict=True) if m]
            errors.setdefault(
                int(i),
                (
                    "missing_features",
                    f"missing {len(absent)} of {n_features} features {absent[:10]} "
                    f"(policy {self.missing_policy}, max_missing_fraction {self.max_missing_fraction})",
                ),
            )
