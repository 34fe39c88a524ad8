"""The backtest replays a stream through the service's pipeline on the event-time clock."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.backtest.driver import Split, run_backtest
from detector.backtest.run import Plan
from detector.backtest.source import read_stream
from detector.errors import DataError
from detector.events import format_time_ms, parse_time_ms
from detector.settings import Settings, load_settings

START = "1990-03-01T00:00:00Z"  # decades before any wall clock this runs on
STEP_S = 60
OUTCOMES = {"promoted", "rejected", "refused", "failed", "busy"}


def small_settings(**drift: Any) -> Settings:
    return load_settings(
        None,
        {
            "model": {"n_components_max": 2, "covariance_types": ["full"]},
            "training": {"n_jobs": 1},
            "kafka": {"max_poll_records": 100},
            "drift": {"sample_rate": 1.0, "window_events": 300, "min_window_events": 100, **drift},
            "retrain": {"min_samples": 200, "window_max_samples": 400},
            "service": {"reload_interval_s": 60.0},
        },
    )


def write_fleet(path: Path, steps: int, shift_at: int | None = None, shift: float = 0.0) -> None:
    """Two entities, one reading a minute each; from ``shift_at`` feature a moves by ``shift``."""
    rng = np.random.default_rng(3)
    t0 = parse_time_ms(START, "ts")
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "entity", "a", "b", "label"])
        for s in range(steps):
            for e in ("p-1", "p-2"):
                a, b = rng.normal(0, 1, 2)
                label = 0
                if shift_at is not None and s >= shift_at:
                    a += shift
                if s in (steps - 40, steps - 39, steps - 38) and e == "p-2":
                    b += 9.0  # a labelled fault near the end
                    label = 1
                w.writerow([format_time_ms(t0 + 1000.0 * STEP_S * s), e, a, b + 0.5 * a, label])


def test_a_retrain_on_the_event_clock_is_reported_with_its_outcome(tmp_path: Path) -> None:
    # Given a stream whose operating point shifts a third of the way in
    data = tmp_path / "shift.csv"
    write_fleet(data, steps=1500, shift_at=500, shift=2.0)
    settings = small_settings()
    stream = read_stream(data, settings, "label")
    # When it is backtested with an hourly retrain and the drift trigger
    result = run_backtest(
        stream,
        settings,
        Plan(batch_rows=100, topic="events", retrain_every_s=3600.0, retrain_on_drift=True),
        split=Split(rows=600),
    )
    s = result.summary
    # Then retrains happened, each reported with its trigger and outcome, and why when not promoted
    assert s["retrains"], s
    for r in s["retrains"]:
        assert r["outcome"] in OUTCOMES and r["trigger"] in ("schedule", "drift event")
        if r["outcome"] != "promoted":
            assert r["reason"], r
    # and drift was detected after the shift, and a promoted version was reloaded and scored
    shift_ms = parse_time_ms(START, "ts") + 1000.0 * STEP_S * 500
    assert any(d["event_time_ms"] >= shift_ms for d in s["drift_events"])
    promoted = [r["version"] for r in s["retrains"] if r["outcome"] == "promoted"]
    assert promoted, [(r["outcome"], r["reason"]) for r in s["retrains"]]
    assert [r["version"] for r in s["reloads"]][: len(promoted)] == promoted[: len(s["reloads"])]
    assert s["reloads"] and s["reloads"][0]["outcome"] == "loaded"
    assert set(promoted) & {a["model_version"] for a in result.replay.alerts}
    assert s["retrain_outcomes"] == {
        k: sum(r["outcome"] == k for r in s["retrains"]) for k in s["retrain_outcomes"]
    }


def test_the_schedule_follows_event_time_not_the_wall_clock(tmp_path: Path) -> None:
    # Given ten hours of readings recorded in 1990, replayed in about a second
    data = tmp_path / "old.csv"
    write_fleet(data, steps=600)
    settings = small_settings()
    stream = read_stream(data, settings, "label")
    plan = Plan(batch_rows=100, topic="events", retrain_every_s=3600.0, retrain_on_drift=False)
    # When it is backtested with an hourly schedule
    result = run_backtest(stream, settings, plan, split=Split(rows=200))
    s = result.summary
    # Then the scheduled runs are the ones an hourly clock of event time makes at batch ends
    ends = result.streamed.times_ms[99::100].tolist()
    expected, due = [], float(result.streamed.times_ms[0]) + 3_600_000
    for t in ends:
        if t >= due:
            expected.append(float(t))
            due = t + 3_600_000
    assert [r["event_time_ms"] for r in s["retrains"]] == expected
    assert len(expected) >= 2
    # and the alerts are stamped with event time, in 1990, not the wall clock
    assert result.replay.alerts
    assert all(a["detected_at"].startswith("1990-") for a in result.replay.alerts)


def test_a_labelled_fault_is_found_with_its_delay(tmp_path: Path) -> None:
    data = tmp_path / "fault.csv"
    write_fleet(data, steps=400)
    settings = small_settings()
    stream = read_stream(data, settings, "label")
    plan = Plan(batch_rows=100, topic="events", retrain_every_s=None, retrain_on_drift=False)
    result = run_backtest(stream, settings, plan, split=Split(rows=300), windows=4)
    s = result.summary
    assert s["detection_delay"]["windows"] == 1
    window = s["anomaly_windows"][0]
    assert window["entity"] == "p-2" and window["rows"] == 3
    assert window["detected"] and window["delay_s"] == 0.0
    assert len(s["windows"]) == 4 and sum(w["rows"] for w in s["windows"]) == len(result.streamed)
    assert s["overall"]["recall_alerted"] == 1.0


def test_rows_stream_in_event_time_order_whatever_the_file_order(tmp_path: Path) -> None:
    # Given a file whose rows are not in time order and whose time column is named "time"
    path = tmp_path / "shuffled.csv"
    path.write_text(
        "time,x\n2020-01-01T00:00:02Z,2\n2020-01-01T00:00:00Z,0\n2020-01-01T00:00:01Z,1\n"
    )
    stream = read_stream(path, load_settings(None), None)
    # Then the time column is found, rows are sorted, and the going back is counted
    assert stream.time_column == "time"
    assert [r["x"] for r in stream.rows] == [0.0, 1.0, 2.0]
    assert stream.file_rows.tolist() == [1, 2, 0]
    assert stream.out_of_order_rows == 1


def test_a_time_column_of_text_stops_with_the_column_and_examples(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("x,when\n" + "".join(f"{i},soon\n" for i in range(20)))
    with pytest.raises(DataError, match=r"'when'.*line 2: 'soon'.*--time-column none"):
        read_stream(path, load_settings(None), None, time_column="when")


def test_without_a_time_column_rows_are_a_second_apart_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("x,y\n3,1\n1,2\n2,3\n")
    stream = read_stream(path, load_settings(None), None)
    assert stream.time_column is None
    assert np.diff(stream.times_ms).tolist() == [1000, 1000]
    assert [r["x"] for r in stream.rows] == [3.0, 1.0, 2.0]


def test_retraining_does_not_learn_a_lasting_fault_of_one_machine(tmp_path: Path) -> None:
    # Given four machines, one of which breaks the coupling of a and b from step 700 to the
    # end (a fault, labelled), retrained hourly and on drift from every sample
    rng = np.random.default_rng(5)
    t0 = parse_time_ms(START, "ts")
    data = tmp_path / "lasting.csv"
    with data.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "entity", "a", "b", "label"])
        for s in range(1500):
            for e in ("p-1", "p-2", "p-3", "p-4"):
                a, b = rng.normal(0, 1, 2)
                fault = e == "p-4" and s >= 700
                b = b + (6.0 if fault else 0.5 * a)
                w.writerow([format_time_ms(t0 + 1000.0 * STEP_S * s), e, a, b, int(fault)])
    settings = small_settings()
    stream = read_stream(data, settings, "label")
    plan = Plan(batch_rows=100, topic="events", retrain_every_s=3600.0, retrain_on_drift=True)
    # When it is backtested
    result = run_backtest(stream, settings, plan, split=Split(rows=1200), windows=5)
    s = result.summary
    # Then models were retrained during the fault, and yet the fault is alerted to the end:
    # its rows never became normal to a promoted model
    fault_ms = t0 + 1000.0 * STEP_S * 700
    assert any(
        r["outcome"] == "promoted" and r["event_time_ms"] > fault_ms + 3_600_000
        for r in s["retrains"]
    ), s["retrains"]
    recalls = [w["recall_warning"] for w in s["windows"] if w["recall_warning"] is not None]
    assert min(recalls) >= 0.95, recalls
