"""The feature spec's inference and the column table training shows."""

from __future__ import annotations

from typing import Any

import pytest

from detector.errors import DataError
from detector.features.spec import COLUMN_TABLE_KEYS, describe_columns, infer_spec
from detector.settings import FeatureSettings


def fleet_rows(n: int = 400) -> list[dict[str, Any]]:
    return [
        {
            "temp": None if i % 50 == 0 else 20.0 + (i % 13),
            "bytes": float(10 ** (i % 6)),
            "kind": ["pump", "fan", "valve"][i % 3],
            "serial": f"SN-{i:05d}",
        }
        for i in range(n)
    ]


def by_column(table: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["column"]: c for c in table}


def test_an_id_like_text_column_is_excluded_and_the_table_says_why() -> None:
    # Given rows with a numeric column with gaps, a heavy-tailed count, a category and an id
    rows = fleet_rows()
    settings = FeatureSettings(auto_log1p_skew=1.0)
    # When the spec is inferred and the column table built
    spec = infer_spec(rows, settings)
    table = describe_columns(spec, rows, settings, notes={"entity": "entity id column"})
    cols = by_column(table)
    # Then the id is left out and every column's type, reason and missing cells are shown
    assert "serial" not in spec.features
    assert all(tuple(c) == COLUMN_TABLE_KEYS for c in table)
    assert cols["serial"]["type"] == "excluded"
    assert cols["serial"]["why"].startswith("excluded as id: 400 distinct values in 400 rows")
    assert cols["temp"] == {
        "column": "temp",
        "type": "numeric",
        "why": "every present value is a number",
        "missing_cells": 8,
        "levels": None,
        "transform": None,
    }
    assert cols["kind"]["type"] == "categorical" and cols["kind"]["levels"] == 3
    assert cols["kind"]["why"] == "3 levels (text values)"
    assert cols["bytes"]["transform"] == "log1p" and "log1p: heavy-tailed" in cols["bytes"]["why"]
    assert cols["entity"] == {
        "column": "entity",
        "type": "excluded",
        "why": "entity id column",
        "missing_cells": None,
        "levels": None,
        "transform": None,
    }


def test_declared_and_excluded_columns_say_where_that_came_from() -> None:
    # Given settings that declare the features and exclude one column
    rows = fleet_rows()
    settings = FeatureSettings(numeric=["temp"], categorical=["kind"], exclude=["serial"], log1p=[])
    # When the table is built
    spec = infer_spec(rows, settings)
    cols = by_column(describe_columns(spec, rows, settings))
    # Then each reason names the setting
    assert cols["temp"]["why"] == "listed in features.numeric"
    assert cols["kind"]["why"] == "3 levels (listed in features.categorical)"
    assert cols["serial"]["why"] == "listed in features.exclude"
    assert cols["bytes"]["why"] == "not listed in features.numeric / features.categorical"


def test_mostly_numeric_typed_values_with_text_are_refused_naming_rows() -> None:
    # Given typed rows (JSON lines, a library caller) with two strings among numbers
    rows = [{"temp": "broken" if i in (4, 9) else float(i)} for i in range(100)]
    # When the spec is inferred
    with pytest.raises(DataError) as err:
        infer_spec(rows, FeatureSettings())
    # Then the column and the rows are named, with the fixes
    msg = str(err.value)
    assert "column 'temp' is mostly numbers (98 of 100 present values)" in msg
    assert "row 5: 'broken'" in msg and "row 10: 'broken'" in msg
    assert "features.numeric" in msg and "features.categorical" in msg
