"""When the retraining job runs: on a schedule and/or on drift, by an injected clock.

One decision, shared by the long-running retrainer and the backtest: a run is due when
the clock has passed the next scheduled time (``every_s`` after the previous run, or at
once with ``run_at_start``), or when a drift event from one of ``trigger_tests`` arrived
since the previous run. After a run, whatever its outcome, the next scheduled time is
``every_s`` after it: a gap in the clock (a quiet night in event time) costs one run,
not one per missed interval.

The clock is a callable returning seconds: the wall clock (``time.monotonic``) for the
retrainer, the event-time clock for the backtest. Nothing here reads the time itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from detector.retrain.trigger import triggers_retrain

SCHEDULE = "schedule"
DRIFT_EVENT = "drift event"


class RetrainSchedule:
    """``due()`` says why a run should start now (or None); ``ran()`` records that it did."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        every_s: float | None = None,
        on_drift: bool = False,
        trigger_tests: Collection[str] = (),
        run_at_start: bool = False,
    ) -> None:
        if every_s is not None and every_s <= 0:
            raise ValueError(f"every_s = {every_s!r}: the interval must be positive")
        self.clock = clock
        self.every_s = every_s
        self.on_drift = on_drift
        self.trigger_tests = set(trigger_tests)
        self._next_s: float | None = None  # set on the first look at the clock
        self._run_at_start = run_at_start
        self._drift_pending = False
        self.runs = 0

    @property
    def enabled(self) -> bool:
        return self.every_s is not None or self.on_drift or self._run_at_start

    def next_run_s(self) -> float:
        """The next scheduled time on the clock (inf without a schedule)."""
        if self._next_s is None:
            now = self.clock()
            if self._run_at_start:
                self._next_s = now
            else:
                self._next_s = now + self.every_s if self.every_s is not None else float("inf")
        return self._next_s

    def note_drift(self, event: Mapping[str, Any]) -> bool:
        """A drift event arrived; True when it makes a run due (``on_drift`` and a trigger test)."""
        fires = self.on_drift and triggers_retrain(event, self.trigger_tests)
        self._drift_pending = self._drift_pending or fires
        return fires

    def due(self) -> str | None:
        """``"schedule"`` or ``"drift event"`` when a run should start now, else None."""
        if self.clock() >= self.next_run_s():
            return SCHEDULE
        if self._drift_pending:
            return DRIFT_EVENT
        return None

    def ran(self) -> None:
        """A run started now: the next scheduled one is ``every_s`` later; drift is consumed."""
        self.runs += 1
        self._drift_pending = False
        self._run_at_start = False
        now = self.clock()
        self._next_s = now + self.every_s if self.every_s is not None else float("inf")
