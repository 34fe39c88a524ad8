"""CLI conventions: --version, `-o -`, full-width tables off a terminal, --json, config as TOML.

CliRunner's stdout is not a terminal, as in a pipe, a file or CI.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from detector.cli.main import SCORE_COLUMNS, app
from detector.settings import Settings, load_settings
from tests.unit.conftest import FEATURES, mixture_sample

runner = CliRunner()
NO_ENV = {"COLUMNS": "40"}  # a narrow "terminal" setting must not cut anything off a pipe


def write_events(path: Path, n: int, anomalies: int) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*FEATURES, "label"])
        for r in mixture_sample(n, seed=7):
            w.writerow([*np.round(r, 5), 0])
        for _ in range(anomalies):
            w.writerow([30.0, -30.0, 0.0, 0.0, 1])


def test_version_names_the_package_and_its_main_libraries() -> None:
    # When `detector --version` runs
    r = runner.invoke(app, ["--version"])
    # Then one line gives our version and those a bug report needs
    assert r.exit_code == 0
    line = r.stdout.strip()
    assert line.startswith(f"detector {version('detector')} (Python {sys.version.split()[0]}")
    assert f"scikit-learn {version('scikit-learn')}" in line
    assert f"kafka-python {version('kafka-python')}" in line


def test_score_to_stdout_writes_only_the_csv_there_and_no_file_named_dash(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a file of 500 normal rows and 5 anomalies
    data = tmp_path / "events.csv"
    write_events(data, 500, anomalies=5)
    monkeypatch.chdir(tmp_path)
    # When it is scored with `-o -`
    r = runner.invoke(app, ["score", str(data), "-m", str(model_dir), "-o", "-", "-l", "label"])
    # Then stdout is the CSV alone, the summary is on stderr, and no file `-` appears
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == 505
    assert list(rows[0]) == ["row", "label", *SCORE_COLUMNS[1:]]
    assert "scored 505 rows" in r.stderr and "-> stdout" in r.stderr
    assert not (tmp_path / "-").exists()
    # ...and the columns follow the one sign and one unit of the README
    ll = np.array([float(x["log_likelihood"]) for x in rows])
    score = np.array([float(x["anomaly_score"]) for x in rows])
    pct = np.array([float(x["percentile"]) for x in rows])
    p_value = np.array([float(x["p_value"]) for x in rows])
    assert np.allclose(score, -ll, rtol=1e-5)
    assert ((pct >= 0) & (pct <= 100)).all() and np.allclose(p_value, pct / 100, atol=1e-4)
    assert 20 < np.median(pct[:500]) < 80  # a percent: normal rows sit mid-range, not < 1
    alerting = [x for x in rows if x["severity"] != "none"]
    assert all(float(x["log_likelihood"]) < float(x["threshold"]) for x in alerting)
    assert all(x["severity"] == "critical" for x in rows[-5:])


def test_score_to_a_missing_folder_fails_before_scoring(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "events.csv"
    write_events(data, 50, anomalies=0)
    # When the output's folder does not exist
    r = runner.invoke(
        app, ["score", str(data), "-m", str(model_dir), "-o", str(tmp_path / "no" / "s.csv")]
    )
    # Then exit 2 naming the option and the folder
    assert r.exit_code == 2
    assert r.stderr.strip() == (
        f"error: --output {tmp_path / 'no' / 's.csv'}: the folder {tmp_path / 'no'} does not exist (create it first)"
    )


def test_evaluate_json_to_stdout_is_the_json_alone(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "events.csv"
    write_events(data, 300, anomalies=5)
    r = runner.invoke(
        app, ["evaluate", str(data), "-m", str(model_dir), "-l", "label", "--json", "-"]
    )
    assert r.exit_code == 0, r.output
    figures = json.loads(r.stdout)
    assert figures["anomalous"] == 5 and "AUROC" in r.stderr


def test_models_list_off_a_terminal_keeps_full_version_ids_and_has_json(model_dir: Path) -> None:
    # When the registry is listed into a pipe (COLUMNS=40 would cut a terminal table)
    r = runner.invoke(app, ["models", "list", "-m", str(model_dir)], env=NO_ENV)
    js = runner.invoke(app, ["models", "list", "-m", str(model_dir), "--json"], env=NO_ENV)
    # Then the JSON lists the version, and the table carries the same id whole, on one line
    assert r.exit_code == 0 and js.exit_code == 0
    (info,) = json.loads(js.stdout)
    assert info["current"] is True and info["n_components"] >= 1
    assert any(info["version"] in line and "*" in line for line in r.stdout.splitlines())
    # ...and `models show --json` is JSON alone, which `promote` can take the id from
    show = runner.invoke(app, ["models", "show", "-m", str(model_dir), "--json"])
    assert show.exit_code == 0
    assert json.loads(show.stdout)["manifest"]["version"] == info["version"]
    promote = runner.invoke(app, ["models", "promote", info["version"], "-m", str(model_dir)])
    assert promote.exit_code == 0 and info["version"] in promote.stdout


def _every_key() -> list[tuple[str, str]]:
    return [
        (section, key)
        for section, field in Settings.model_fields.items()
        for key in field.annotation.model_fields  # type: ignore[union-attr]
    ]


def test_config_show_is_toml_with_every_key_that_config_check_accepts(tmp_path: Path) -> None:
    # Given a file that sets temporal windows, levels, a path and leaves the broker unset
    given = tmp_path / "given.toml"
    given.write_text(
        '[features]\ntemporal = { vibration = 5, "bearing temp" = 3 }\n'
        "[training]\nseverity_percentiles = { warning = 2.0, critical = 0.2 }\n"
        '[kafka]\ninput_topic = "pumps"\n'
    )
    # When the effective configuration is shown (a flag and an env var on top)
    r = runner.invoke(
        app,
        ["config", "show", "--config", str(given), "-m", str(tmp_path / "reg")],
        env={"DETECTOR_KAFKA__GROUP_ID": "g1", "DETECTOR_KAFKA__SASL_PASSWORD": "hunter2"},
    )
    assert r.exit_code == 0, r.output
    text = r.stdout
    # Then every section and key is there, values as TOML, unset ones commented out
    lines = text.splitlines()
    for section, key in _every_key():
        assert f"[{section}]" in lines
        assert any(line.startswith((f"{key} = ", f"# {key} = ")) for line in lines), (
            f"{section}.{key} missing"
        )
    assert 'temporal = { vibration = 5, "bearing temp" = 3 }  # file ' in text
    assert f'path = "{tmp_path / "reg"}"  # argument' in text
    assert 'group_id = "g1"  # env DETECTOR_KAFKA__GROUP_ID' in text
    assert "# bootstrap_servers = (unset)  # default" in text
    assert "# sasl_password = (secret: set, not shown)" in text and "hunter2" not in text
    assert "PosixPath" not in text and "None" not in text
    # ...and it is a configuration file: `config check` accepts it, and it loads the same values
    shown = tmp_path / "shown.toml"
    shown.write_text(text)
    check = runner.invoke(app, ["config", "check", str(shown)])
    assert check.exit_code == 0 and "OK" in check.stdout
    expected = load_settings(
        given,
        {"registry": {"path": str(tmp_path / "reg")}, "kafka": {"group_id": "g1"}},
        environ={},
    ).model_dump()
    assert load_settings(shown, environ={}).model_dump() == expected


def test_config_show_json_has_values_and_sources(tmp_path: Path) -> None:
    r = runner.invoke(app, ["config", "show", "--json", "-m", str(tmp_path)])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["settings"]["registry"]["path"] == str(tmp_path)
    assert doc["settings"]["features"]["temporal"] == {}
    assert doc["settings"]["kafka"]["bootstrap_servers"] is None
    assert doc["sources"]["registry.path"] == "argument"
    assert doc["sources"]["model.n_components_max"] == "default"
    assert len(doc["sources"]) == len(_every_key())
