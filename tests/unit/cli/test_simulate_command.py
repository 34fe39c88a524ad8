"""`detector simulate`: the demo fleet as training history (--csv) or as a live stream."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import orjson
from typer.testing import CliRunner

import detector.cli.simulate_command as simulate_command  # registers `simulate` on the app
from detector.cli.main import app
from detector.demo.fleet import FEATURES

runner = CliRunner()


def test_csv_history_trains_the_first_model(tmp_path: Path) -> None:
    # Given the training file the deploy README has the user make
    data = tmp_path / "train.csv"
    r = runner.invoke(app, ["simulate", "--csv", str(data), "--pumps", "4", "--steps", "300"])
    assert r.exit_code == 0, r.output
    assert "wrote 1200 healthy readings of 4 pumps" in r.output
    with data.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1200 and set(FEATURES) <= set(rows[0])
    assert {row["label"] for row in rows} == {"0"}
    # When it is trained on as the compose `train` service does
    env = {"DETECTOR_MODEL__N_COMPONENTS_MAX": "2", "DETECTOR_TRAINING__N_JOBS": "1"}
    models = tmp_path / "models"
    r = runner.invoke(
        app, ["train", str(data), "--label-column", "label", "-m", str(models), "-q"], env=env
    )
    # Then a model version is published and made CURRENT
    assert r.exit_code == 0, r.output
    assert "(CURRENT)" in r.output and (models / "CURRENT").exists()


def test_history_ends_now() -> None:
    # Event times of the history lead up to the wall clock (inside the retraining window)
    now = datetime.now(UTC)
    stream = simulate_command.blocks(
        n_pumps=4,
        rate=40.0,
        seed=1,
        block_steps=100,
        faults=False,
        drift_after_blocks=None,
        max_record_bytes=4096,
        now=now,
    )
    first = [orjson.loads(next(stream).raw) for _ in range(8)]
    assert {e["entity"] for e in first} == {"pump-00", "pump-01", "pump-02", "pump-03"}
    t0 = datetime.fromisoformat(first[0]["ts"].replace("Z", "+00:00"))
    t1 = datetime.fromisoformat(first[4]["ts"].replace("Z", "+00:00"))
    assert abs((t0 - now).total_seconds()) < 1.0
    # one step = every pump once = n_pumps / rate seconds
    assert abs((t1 - t0).total_seconds() - 4 / 40.0) < 0.002


def test_stream_blocks_carry_the_demo_faults_only_when_asked() -> None:
    def first_block(faults: bool) -> list[bytes]:
        stream = simulate_command.blocks(4, 100.0, 1, 200, faults, None, 4096, datetime.now(UTC))
        return [next(stream).raw for _ in range(4 * 200)]

    def malformed(raws: list[bytes]) -> int:
        n = 0
        for raw in raws:
            try:
                event = orjson.loads(raw)
                values = event.get("values") if isinstance(event, dict) else None
                ok = isinstance(values, dict) and not any(
                    isinstance(v, str) for v in values.values()
                )
                n += 0 if ok else 1
            except orjson.JSONDecodeError:
                n += 1
        return n

    assert malformed(first_block(True)) >= 3
    assert malformed(first_block(False)) == 0


def test_streaming_without_a_cluster_says_how_to_name_one() -> None:
    r = runner.invoke(
        app, ["simulate", "--limit", "5"], env={"DETECTOR_KAFKA__BOOTSTRAP_SERVERS": ""}
    )
    assert r.exit_code == 2
    assert "kafka.bootstrap_servers is unset" in r.output and "--bootstrap" in r.output
