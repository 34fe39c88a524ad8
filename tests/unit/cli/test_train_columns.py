"""`detector train` says what it did with each column, and refuses columns it cannot read."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

runner = CliRunner()
ENV = {"DETECTOR_MODEL__N_COMPONENTS_MAX": "2", "DETECTOR_TRAINING__N_JOBS": "1", "COLUMNS": "200"}


def sensor_csv(path: Path, n: int, temperature_cell, level_cell) -> Path:
    rng = np.random.default_rng(7)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["entity", "timestamp", "Temperature", "Level", "serial"])
        for i in range(n):
            t, lv = rng.normal(70, 3), rng.normal(0.4, 0.05)
            w.writerow([f"p{i % 4}", i, temperature_cell(i, t), level_cell(i, lv), f"SN{i:06d}"])
    return path


def test_train_with_na_cells_and_an_id_prints_the_column_table(tmp_path: Path) -> None:
    from detector.cli.main import app

    # Given a numeric column with some n/a and empty cells, and a serial-number column
    data = sensor_csv(
        tmp_path / "t.csv",
        1200,
        lambda i, t: "n/a" if i % 97 == 0 else ("" if i % 131 == 0 else f"{t:.2f}"),
        lambda i, lv: f"{lv:.3f}",
    )
    # When a model is trained, then shown
    trained = runner.invoke(app, ["train", str(data), "-m", str(tmp_path / "m")], env=ENV)
    shown = runner.invoke(app, ["models", "show", "-m", str(tmp_path / "m")], env=ENV)
    # Then training succeeds and both print the table: headers, types, reasons, missing cells
    assert trained.exit_code == 0, trained.output
    assert shown.exit_code == 0, shown.output
    for output in (trained.output, shown.output):
        lines = {ln.split("│")[1].strip(): ln for ln in output.splitlines() if ln.count("│") == 5}
        for header in ("column", "type", "why", "missing cells"):
            assert header in output
        assert (
            "numeric" in lines["Temperature"]
            and "cells read as missing ('n/a')" in lines["Temperature"]
        )
        assert lines["Temperature"].split("│")[4].strip() == str(13 + 10 - 1)  # n/a + empty cells
        assert "excluded as id: 1200 distinct values" in lines["serial"]
        assert "entity id column (training.entity_column)" in lines["entity"]
        assert "is it an id" not in output


def test_train_decimal_comma_is_refused_then_read_with_the_flag(tmp_path: Path) -> None:
    from detector.cli.main import app

    # Given a column written with decimal commas
    data = sensor_csv(
        tmp_path / "t.csv",
        800,
        lambda i, t: f"{t:.2f}",
        lambda i, lv: f"{lv:.2f}".replace(".", ","),
    )
    # When it is trained without, then with the decimal option
    refused = runner.invoke(app, ["train", str(data), "-m", str(tmp_path / "m")], env=ENV)
    read = runner.invoke(
        app, ["train", str(data), "-m", str(tmp_path / "m"), "--decimal", ","], env=ENV
    )
    # Then it is refused with the hint (exit 2), never made a categorical, and read with it
    assert refused.exit_code == 2
    assert "column 'Level' holds numbers written with a decimal comma" in refused.output
    assert "--decimal ," in refused.output
    # With "," the Temperature column (decimal points) is refused in turn: one separator a file
    assert (
        read.exit_code == 2
        and "column 'Temperature' holds numbers written with a decimal point" in read.output
    )


def test_train_decimal_comma_file_trains_with_the_option(tmp_path: Path) -> None:
    from detector.cli.main import app

    # Given a file whose every decimal number uses a comma
    data = sensor_csv(
        tmp_path / "t.csv",
        800,
        lambda i, t: f"{t:.2f}".replace(".", ","),
        lambda i, lv: f"{lv:.2f}".replace(".", ","),
    )
    # When it is trained with --decimal ,
    result = runner.invoke(
        app, ["train", str(data), "-m", str(tmp_path / "m"), "--decimal", ","], env=ENV
    )
    # Then both columns are numeric, and the table says they had decimal commas
    assert result.exit_code == 0, result.output
    lines = {
        ln.split("│")[1].strip(): ln for ln in result.output.splitlines() if ln.count("│") == 5
    }
    for name in ("Temperature", "Level"):
        assert "numeric" in lines[name] and 'decimal comma (features.decimal = ",")' in lines[name]
