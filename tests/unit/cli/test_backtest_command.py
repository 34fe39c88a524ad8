"""`detector synthetic` and `detector backtest` as a user runs them (CliRunner: not a terminal)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import detector.cli.backtest_command  # noqa: F401  (registers the commands)
from detector.cli.main import app

runner = CliRunner()
SMALL = {
    "DETECTOR_MODEL__N_COMPONENTS_MAX": "2",
    "DETECTOR_TRAINING__N_JOBS": "1",
    "DETECTOR_REGISTRY__PATH": "models-unused",
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fleet") / "fleet.csv"
    made = runner.invoke(
        app, ["synthetic", str(path), "--entities", "3", "--days", "1", "--faults", "6"]
    )
    assert made.exit_code == 0, made.output
    assert "wrote" in made.output
    return path


def test_backtest_writes_json_report_and_alerts(fleet: Path, tmp_path: Path) -> None:
    # When a user backtests the synthetic fleet with every output
    out = tmp_path / "bt.json"
    report = tmp_path / "bt.html"
    alerts = tmp_path / "alerts.jsonl"
    result = runner.invoke(
        app,
        [
            "backtest",
            str(fleet),
            "--label-column",
            "label",
            "--train-fraction",
            "0.4",
            "--json",
            str(out),
            "--report",
            str(report),
            "--alerts",
            str(alerts),
        ],
        env=SMALL,
    )
    # Then it says what it found, and the files hold the figures, the page and the alerts
    assert result.exit_code == 0, result.output
    assert "AUROC" in result.output and "labelled anomaly windows" in result.output
    summary = json.loads(out.read_text())
    assert summary["stream"]["time_column"] == "timestamp"
    assert summary["overall"]["alerts"] == len(alerts.read_text().splitlines())
    assert summary["detection_delay"]["windows"] > 0
    assert len(summary["windows"]) == 10
    page = report.read_text()
    assert "Scores over time" in page and "Alert rate over time" in page


def test_a_time_column_that_is_not_there_is_a_usage_error(fleet: Path) -> None:
    result = runner.invoke(app, ["backtest", str(fleet), "--time-column", "when"], env=SMALL)
    assert result.exit_code == 2
    assert "--time-column 'when' is not a column" in result.output


def test_two_ways_to_split_is_a_usage_error(fleet: Path) -> None:
    result = runner.invoke(
        app, ["backtest", str(fleet), "--train-rows", "10", "--train-fraction", "0.5"], env=SMALL
    )
    assert result.exit_code == 2
    assert "choose one of --train-until, --train-rows, --train-fraction" in result.output


def test_an_unnamed_label_column_is_warned_about(fleet: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["backtest", str(fleet), "--no-retrain", "--json", str(tmp_path / "x.json")], env=SMALL
    )
    assert result.exit_code == 0, result.output
    assert "pass --label-column label" in result.output
