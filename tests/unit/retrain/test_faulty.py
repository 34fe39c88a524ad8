"""Which window rows a retrain may learn from: not one machine's fault, long or short."""

from __future__ import annotations

from detector.retrain.faulty import RUN_MIN, learnable
from detector.retrain.window import SampleRow

T0 = 1_795_000_000_000


def fleet_window(steps: int, machines: int, alerted: set[tuple[int, int]]) -> list[SampleRow]:
    """One sample per machine per step, in time order; ``alerted``: (step, machine) pairs."""
    return [
        SampleRow({"x": 0.0}, f"m{m}", T0 + 60_000 * s, (s, m) in alerted, "v")
        for s in range(steps)
        for m in range(machines)
    ]


def left_out(rows: list[SampleRow], faulty: set[str] | None = None) -> set[tuple[int, str]]:
    keep = learnable(rows, faulty or set())
    return {
        ((r.event_time_ms - T0) // 60_000, r.entity or "")
        for r, k in zip(rows, keep, strict=True)
        if not k
    }


def test_a_short_fault_of_one_machine_is_left_out() -> None:
    # Given 8 machines; machine 3 alerts on 20 consecutive samples, nobody else then
    rows = fleet_window(200, 8, {(s, 3) for s in range(100, 120)})
    # When the rows a retrain may learn from are chosen, then those 20 are not among them
    assert left_out(rows) == {(s, "m3") for s in range(100, 120)}


def test_isolated_alerts_and_short_runs_stay_they_are_the_calibrated_tail() -> None:
    # Given scattered single alerts and one run just below RUN_MIN
    alerted = {(10, 1), (50, 4), (51, 6), (90, 2)} | {(s, 5) for s in range(150, 150 + RUN_MIN - 1)}
    rows = fleet_window(200, 8, alerted)
    # Then nothing is left out: leaving the tail out would narrow every retrain
    assert left_out(rows) == set()


def test_alerts_most_of_the_fleet_shares_are_an_operating_point_and_stay() -> None:
    # Given 6 of 8 machines alerting together for 20 steps (a fleet-wide change)
    rows = fleet_window(200, 8, {(s, m) for s in range(100, 120) for m in range(6)})
    # Then every row stays, to be learnt (or refused by the alerted-fraction rule)
    assert left_out(rows) == set()


def test_a_faulty_machines_alerts_go_with_its_runs_and_a_single_series_keeps_its_runs() -> None:
    # Given machine 2 taken as faulty (it alerts far more than the others) with scattered alerts
    rows = fleet_window(100, 4, {(10, 2), (40, 2), (41, 0)})
    assert left_out(rows, {"m2"}) == {(10, "m2"), (40, "m2")}
    # ...and a single series with a run: no others to tell a fault from an operating point
    # (retrain.max_alerted_fraction_one_series judges it instead)
    one = fleet_window(100, 1, {(s, 0) for s in range(30, 50)})
    assert left_out(one) == set()


def test_a_long_fault_stays_one_machines_though_the_others_have_tail_alerts_meanwhile() -> None:
    # Given 10 machines with scattered single alerts (every 50th sample of each, staggered),
    # and machine 0 alerting on 200 consecutive samples
    tail = {(s, m) for m in range(1, 10) for s in range(m * 5, 1_000, 50)}
    rows = fleet_window(1_000, 10, tail | {(s, 0) for s in range(300, 500)})
    # Then its run is still left out: the others alerted on a few rows of that span, not
    # on most of theirs
    assert {(s, "m0") for s in range(300, 500)} <= left_out(rows)
    assert all(e == "m0" for _, e in left_out(rows))
