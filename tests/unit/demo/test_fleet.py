"""The simulated fleet's time: relative to the clock it is given, never a fixed date."""

from __future__ import annotations

import time

import orjson

from detector.demo.fleet import default_scenarios, starting_before, stream_events
from detector.events import parse_time_ms

YEAR_S = 365 * 86_400.0


def event_times_ms(now_s: float) -> list[float]:
    spec = starting_before(now_s, 100 + 50)
    events = stream_events(spec, 100, 50, default_scenarios(spec, 100, 50))
    return [
        parse_time_ms(doc["ts"], "ts")
        for doc in (orjson.loads(e.raw) for e in events if e.scenario != "malformed")
    ]


def test_the_story_ends_at_the_clock_it_is_given_today_or_a_year_from_now() -> None:
    for now_s in (time.time(), time.time() + YEAR_S):
        # Given a clock; When the fleet's training history and stream are simulated
        times = event_times_ms(now_s)
        # Then the stream's last step is the clock's "now", none after it
        assert abs(max(times) - (now_s - 1) * 1000) <= 1
        assert abs(min(times) - (now_s - 50) * 1000) <= 1
