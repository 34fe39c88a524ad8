"""The sampling rate a stream's event rate needs for retraining to fire (issue 20)."""

from __future__ import annotations

from detector.retrain.pace import pace
from tests.unit.conftest import small_settings


def test_a_sensor_once_a_minute_is_told_the_rate_it_needs_and_a_fleet_is_not() -> None:
    # Given the defaults: 1% sampling, a 7-day window, 1,000 samples at least
    s = small_settings()
    # When one sensor reports once a minute
    slow = pace(1 / 60, s)
    # Then about 100 samples fit a window: retraining never fires, and the advice names
    # the setting and a rate that reaches retrain.min_samples
    assert not slow.retrains
    assert 90 < slow.samples_per_window < 110
    advice = slow.advice()
    assert advice is not None and "drift.sample_rate >= 0.0992" in advice
    assert pace(
        1 / 60,
        s.model_copy(
            update={"drift": s.drift.model_copy(update={"sample_rate": slow.min_sample_rate})}
        ),
    ).retrains
    # ...while a fleet of 5,000 events/s is fine at 1% and would fill the window at a
    # far lower rate
    fleet = pace(5_000, s)
    assert fleet.retrains and fleet.advice() is None
    assert fleet.filling_sample_rate < 0.001
