"""Labelled anomaly windows and their detection delay."""

from __future__ import annotations

import numpy as np

from detector.backtest.figures import anomaly_windows, delay_summary, window_of_rows


def test_detection_delay_is_the_event_time_to_the_first_flagged_row_of_each_window() -> None:
    # Given two entities interleaved, one second apart per entity, with labelled runs:
    # entity a: rows 2..5 anomalous, flagged from its 3rd anomalous row on;
    # entity b: rows 1..2 anomalous, never flagged.
    n_steps = 8
    entities = [e for _ in range(n_steps) for e in ("a", "b")]
    times = np.array([1_000 * s for s in range(n_steps) for _ in ("a", "b")], dtype=np.int64)
    labels = np.zeros(2 * n_steps, dtype=np.int8)
    flagged = np.zeros(2 * n_steps, dtype=bool)
    for step in range(2, 6):
        labels[2 * step] = 1  # entity a
    flagged[2 * 4] = flagged[2 * 5] = True
    flagged[2 * 7] = True  # a flag after the window does not count
    for step in (1, 2):
        labels[2 * step + 1] = 1  # entity b
    # When the windows are found
    windows = anomaly_windows(times, labels, flagged, entities)
    # Then there is one per run, a detected 2 s (2 rows) after it began, b missed
    assert [(w["entity"], w["rows"]) for w in windows] == [("b", 2), ("a", 4)]
    b, a = windows
    assert a["detected"] and a["delay_s"] == 2.0 and a["delay_rows"] == 2
    assert a["flagged_rows"] == 2
    assert not b["detected"] and b["delay_s"] is None
    summary = delay_summary(windows)
    assert summary["windows"] == 2 and summary["detected"] == 1
    assert summary["detection_rate"] == 0.5 and summary["delay_s_median"] == 2.0


def test_without_entities_a_run_is_consecutive_rows_of_the_stream() -> None:
    times = np.arange(6, dtype=np.int64) * 500
    labels = np.array([0, 1, 1, 0, 1, 0], dtype=np.int8)
    flagged = np.array([0, 1, 0, 0, 0, 0], dtype=bool)
    windows = anomaly_windows(times, labels, flagged)
    assert [(w["first_row"], w["rows"], w["detected"]) for w in windows] == [
        (1, 2, True),
        (4, 1, False),
    ]
    assert windows[0]["delay_s"] == 0.0


def test_windows_by_rows_hold_equal_counts_and_by_time_equal_spans() -> None:
    times = np.array([0, 1, 2, 3, 100, 101, 102, 200], dtype=np.int64)
    by_rows = window_of_rows(times, 4, "rows")
    by_time = window_of_rows(times, 2, "time")
    assert np.bincount(by_rows).tolist() == [2, 2, 2, 2]
    assert by_time.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
