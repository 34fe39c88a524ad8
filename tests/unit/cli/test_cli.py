"""The `detector` command: train -> score -> evaluate -> models, and config errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from detector.cli.main import app
from tests.unit.conftest import mixture_sample

runner = CliRunner()


def write_csv(path: Path, n: int, seed: int, anomalies: int = 0) -> None:
    x = mixture_sample(n, seed)
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "a", "b", "c", "d", "site", "label"])
        for i, r in enumerate(x):
            w.writerow([i, *np.round(r, 5), ["north", "south"][int(rng.integers(2))], 0])
        for i in range(anomalies):
            w.writerow([n + i, 30.0, -30.0, 0.0, 0.0, "north", 1])


def test_train_score_evaluate_models(tmp_path: Path) -> None:
    # Given a labelled CSV with a categorical column
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    write_csv(train_csv, 3000, seed=1, anomalies=20)
    write_csv(test_csv, 2000, seed=2, anomalies=20)
    models = tmp_path / "models"
    env = {"DETECTOR_MODEL__N_COMPONENTS_MAX": "4", "DETECTOR_TRAINING__N_JOBS": "1"}
    # When it is trained on (anomalous rows dropped), then a test file scored and evaluated
    r = runner.invoke(
        app, ["train", str(train_csv), "-m", str(models), "-l", "label", "-q"], env=env
    )
    assert r.exit_code == 0, r.output
    assert "published model version" in r.output
    out = tmp_path / "scores.csv"
    r = runner.invoke(
        app, ["score", str(test_csv), "-m", str(models), "-o", str(out), "-l", "label"]
    )
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    # Then every input row has a scored output row with the documented columns, in order
    assert len(rows) == 2020
    assert {"anomaly_score", "log_likelihood", "percentile", "severity", "top_features"} <= set(
        rows[0]
    )
    assert all(r["severity"] == "critical" and r["top_features"] for r in rows[-20:])
    js = tmp_path / "q.json"
    r = runner.invoke(
        app, ["evaluate", str(test_csv), "-m", str(models), "-l", "label", "--json", str(js)]
    )
    assert r.exit_code == 0, r.output
    q = json.loads(js.read_text())
    assert q["auroc"] > 0.99 and q["per_severity"]["warning"]["recall_anomalous"] == 1.0
    assert 0.002 < q["per_severity"]["warning"]["alert_rate_normal"] < 0.03
    # ...and the registry commands see the version
    r = runner.invoke(app, ["models", "list", "-m", str(models)])
    assert r.exit_code == 0 and "*" in r.output
    r = runner.invoke(app, ["models", "show", "-m", str(models)])
    assert r.exit_code == 0 and '"n_components"' in r.output


def test_config_check_exits_2_naming_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[training]\ncalibration_fraction = 2.0\n")
    r = runner.invoke(app, ["config", "check", str(bad)])
    assert r.exit_code == 2
    assert "training.calibration_fraction = 2.0" in r.output


def test_missing_file_and_missing_model_are_clear_errors(tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", str(tmp_path / "none.csv"), "-m", str(tmp_path)])
    assert r.exit_code == 2 and "does not exist" in r.output
    csv_path = tmp_path / "t.csv"
    write_csv(csv_path, 10, seed=3)
    r = runner.invoke(
        app, ["score", str(csv_path), "-m", str(tmp_path / "empty"), "-o", str(tmp_path / "o.csv")]
    )
    assert r.exit_code == 1 and "no CURRENT model" in r.output
