"""CSV reading: missing-value tokens, decimal commas, mostly-numeric columns with text."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from detector.errors import DataError
from detector.io.tables import MISSING_TOKENS, read_table
from tests.unit.conftest import small_settings


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def temperatures(n: int, bad: dict[int, str]) -> list[list[Any]]:
    """n rows of (Temperature, Pressure); row i's temperature replaced by bad[i]."""
    return [
        [bad.get(i, f"{20 + (i % 17) * 0.37:.2f}"), f"{1 + (i % 5) * 0.1:.1f}"] for i in range(n)
    ]


def test_missing_tokens_in_a_numeric_column_are_missing_values(tmp_path: Path) -> None:
    # Given a numeric column with empty cells and every documented token, in mixed case
    tokens = sorted(MISSING_TOKENS)
    bad = {3 + 7 * k: t.upper() if k % 2 else t for k, t in enumerate(tokens)}
    bad[100] = " n/a "
    path = write_csv(tmp_path / "t.csv", ["Temperature", "Pressure"], temperatures(300, bad))
    # When it is read for training
    table = read_table(path, small_settings(), for_training=True)
    # Then the column stays numeric, those cells are None, the rest are the numbers
    values = [r["Temperature"] for r in table.rows]
    assert all(values[i] is None for i in bad)
    assert all(isinstance(v, float) for i, v in enumerate(values) if i not in bad)
    assert values[1] == pytest.approx(20.37)
    assert table.notes["Temperature"].startswith(f"{len(bad) - 1} cells read as missing ('#N/A'")


def test_mostly_numeric_column_with_text_names_column_cells_and_fixes(tmp_path: Path) -> None:
    # Given a numeric column with three text cells (data rows 15, 228 and 979)
    rows = temperatures(2000, {15: "error", 228: "error", 979: "high"})
    path = write_csv(tmp_path / "t.csv", ["Temperature", "Pressure"], rows)
    # When it is read for training
    with pytest.raises(DataError) as err:
        read_table(path, small_settings(), for_training=True)
    # Then the error names the column, the cells with their line numbers and every fix
    msg = str(err.value)
    assert "column 'Temperature' is mostly numbers (1997 of 2000 present cells)" in msg
    assert "line 17: 'error'" in msg and "line 230: 'error'" in msg and "line 981: 'high'" in msg
    assert 'features.numeric = ["Temperature", "Pressure"]' in msg
    assert 'features.decimal = ","' in msg and "features.categorical" in msg
    assert "clean the data" in msg
    assert "is it an id" not in msg


def test_declaring_the_column_numeric_reads_its_text_cells_as_missing(tmp_path: Path) -> None:
    # Given the same column, declared numeric as the error suggests
    rows = temperatures(500, {15: "error", 228: "oops"})
    path = write_csv(tmp_path / "t.csv", ["Temperature", "Pressure"], rows)
    settings = small_settings(features={"numeric": ["Temperature", "Pressure"]})
    # When it is read for training
    table = read_table(path, settings, for_training=True)
    # Then the text cells are missing values and the reader says how many
    assert table.rows[15]["Temperature"] is None and table.rows[228]["Temperature"] is None
    assert table.rows[16]["Temperature"] == pytest.approx(20 + 16 * 0.37)
    assert "2 text cells read as missing" in table.notes["Temperature"]


def test_decimal_comma_without_the_option_is_refused_with_the_hint(tmp_path: Path) -> None:
    # Given a column of decimal-comma numbers and features.decimal left at "."
    rows = [[f"0,{30 + i % 9}", f"{i % 7}.5"] for i in range(400)]
    path = write_csv(tmp_path / "t.csv", ["Level", "Flow"], rows)
    # When it is read, for training or for scoring
    for for_training in (True, False):
        with pytest.raises(DataError) as err:
            read_table(path, small_settings(), for_training=for_training)
        # Then it is never taken for a categorical column: the error says how to read it
        msg = str(err.value)
        assert "column 'Level' holds numbers written with a decimal comma" in msg
        assert "line 2: '0,30'" in msg
        assert 'features.decimal = ","' in msg and "--decimal ," in msg


def test_decimal_comma_with_the_option_reads_numbers(tmp_path: Path) -> None:
    # Given the same column and features.decimal = ","
    rows = [
        [f"0,{30 + i % 9}", str(i % 7), "n/a" if i == 5 else f"-1,5e{i % 3}"] for i in range(400)
    ]
    path = write_csv(tmp_path / "t.csv", ["Level", "Count", "Other"], rows)
    table = read_table(path, small_settings(features={"decimal": ","}), for_training=True)
    # Then they are numbers, integers and exponents included, and the note says how
    assert table.rows[0]["Level"] == pytest.approx(0.30)
    assert table.rows[8]["Level"] == pytest.approx(0.38)
    assert table.rows[3]["Count"] == 3.0 and table.rows[4]["Other"] == pytest.approx(-15.0)
    assert table.rows[5]["Other"] is None
    assert 'decimal comma (features.decimal = ",")' in table.notes["Level"]


def test_decimal_point_numbers_with_the_comma_option_are_refused(tmp_path: Path) -> None:
    # Given features.decimal = "," and a column written with decimal points
    path = write_csv(
        tmp_path / "t.csv", ["Temperature"], [[f"{20 + i * 0.25:.2f}"] for i in range(300)]
    )
    # When it is read for training
    with pytest.raises(DataError) as err:
        read_table(path, small_settings(features={"decimal": ","}), for_training=True)
    # Then the error says the separators disagree
    assert "column 'Temperature' holds numbers written with a decimal point" in str(err.value)
    assert 'features.decimal = "."' in str(err.value)


def test_text_columns_and_scoring_files_keep_their_text(tmp_path: Path) -> None:
    # Given a categorical column, and a numeric one with a text cell read for scoring
    rows = [["pump" if i % 2 else "fan", "oops" if i == 3 else str(i)] for i in range(300)]
    path = write_csv(tmp_path / "t.csv", ["kind", "x"], rows)
    # When it is read for scoring (the model decides the types there)
    table = read_table(path, small_settings())
    # Then the text stays text: the encoder reports the bad row in place
    assert table.rows[0]["kind"] == "fan" and table.rows[3]["x"] == "oops"


def test_a_file_without_an_entity_column_is_one_series_for_temporal_features(
    tmp_path: Path,
) -> None:
    # Given one sensor's readings in time order, no entity column, and a temporal window
    from detector.features.temporal import TemporalState
    from detector.io.tables import with_temporal

    rows = [[f"{20 + (i % 7) * 0.5:.1f}", f"{1 + (i % 3) * 0.1:.1f}"] for i in range(40)]
    path = write_csv(tmp_path / "one.csv", ["temp", "pressure"], rows)
    table = read_table(path, small_settings(), for_training=True)
    assert table.entities is None
    # When its temporal features are derived for training
    augmented = with_temporal(table, {"temp": 5})
    # Then each row continues the one before it, exactly as the service derives them for
    # events without an entity (one state for the whole stream)
    streamed = TemporalState({"temp": 5}).augment([None] * len(table.rows), table.rows)
    assert augmented.rows == streamed
    assert augmented.rows[3]["temp__mean5"] is None  # warming up
    assert augmented.rows[10]["temp__std5"] is not None
