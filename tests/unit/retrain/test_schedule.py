"""The retrain schedule decides on an injected clock: never the wall clock."""

from __future__ import annotations

from detector.retrain.schedule import DRIFT_EVENT, SCHEDULE, RetrainSchedule


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_run_is_due_every_interval_of_the_injected_clock() -> None:
    # Given a schedule of one run an hour on a clock 40 years in the past
    clock = FakeClock(3_600.0 * 24 * 365)
    schedule = RetrainSchedule(clock, every_s=3600.0)
    start = clock.t
    assert schedule.due() is None
    # When the clock moves 59 minutes, then an hour
    clock.t = start + 59 * 60
    early = schedule.due()
    clock.t = start + 3600
    # Then the run is due only at the hour, and the next an hour after it ran
    assert early is None
    assert schedule.due() == SCHEDULE
    schedule.ran()
    assert schedule.due() is None
    assert schedule.next_run_s() == start + 7200


def test_a_gap_in_the_clock_costs_one_run_not_one_per_missed_interval() -> None:
    clock = FakeClock(0.0)
    schedule = RetrainSchedule(clock, every_s=60.0)
    schedule.next_run_s()
    # When the clock jumps ten intervals ahead
    clock.t = 600.0
    runs = 0
    while schedule.due():
        schedule.ran()
        runs += 1
    # Then one run, and the next one interval later
    assert runs == 1
    assert schedule.next_run_s() == 660.0


def test_a_drift_event_of_a_trigger_test_makes_a_run_due_once() -> None:
    clock = FakeClock(100.0)
    schedule = RetrainSchedule(clock, on_drift=True, trigger_tests=["psi"])
    # Given a drift event of a test that does not trigger, then one that does
    assert not schedule.note_drift({"test": "alert_rate"})
    assert schedule.due() is None
    assert schedule.note_drift({"test": "psi"})
    # Then a run is due for the drift event, and no longer once it ran
    assert schedule.due() == DRIFT_EVENT
    schedule.ran()
    assert schedule.due() is None
    assert schedule.runs == 1


def test_without_on_drift_drift_events_start_nothing() -> None:
    schedule = RetrainSchedule(FakeClock(0.0), every_s=10.0, on_drift=False)
    assert not schedule.note_drift({"test": "psi"})
    assert schedule.due() is None
