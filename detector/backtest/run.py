"""The backtest: a recorded stream through the service's pipeline, on the event-time clock.

    events in event-time order, batches of kafka.max_poll_records
      -> process()                  parse, temporal state, scorer, cooldown (the service's code)
      -> Sampler -> samples topic   in memory (``MemoryTopic``), the rows the retrainer reads
      -> DriftMonitor               observe + evaluate, rate-limited in event seconds
      -> RetrainSchedule            schedule and drift trigger on the event-time clock
      -> retrain_once               window (count and age by event time), fit, gate, publish
      -> reload                     the promoted version scores from the first batch that starts
                                    service.reload_interval_s of event time after promotion (a
                                    later promotion before then replaces it: CURRENT is loaded)

Nothing here reads the wall clock for a decision: the clock is the newest event time seen
(``EventClock``), so a year of history replays in minutes and the same file gives the same
run on any day. Retraining takes no event time (the stream waits for it), and a version is
published into a registry of its own (a temporary directory unless one is given), never
the user's.

Records get the topic ``kafka.input_topic``, partition 0 and offsets 0, 1, 2... in stream
order: the coordinates they would have if produced in that order to a one-partition topic,
so the alert ids are the ones the live service gives the same events. A stream read from
a topic (``detector.backtest.topic``) keeps its records' own coordinates.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.backtest.memory import MemoryTopic
from detector.backtest.source import Stream
from detector.drift.monitor import DriftMonitor, Sampler
from detector.events import EventParser, format_time_ms
from detector.features.temporal import TemporalState
from detector.metrics import RetrainMetrics, ServiceMetrics
from detector.model.scorer import Scorer
from detector.pipeline import PipelineState, process
from detector.pipeline.batches import RecordSlice
from detector.registry.store import ModelRegistry
from detector.retrain.job import retrain_once
from detector.retrain.schedule import RetrainSchedule
from detector.retrain.window import SampleRow, _rows_of, age_window
from detector.settings import Settings
from detector.stream.alerts import Cooldown

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]


class EventClock:
    """The backtest's clock: the newest event time seen, in ms. It never goes back."""

    def __init__(self, start_ms: float) -> None:
        self.now_ms = float(start_ms)

    def advance(self, time_ms: float) -> None:
        self.now_ms = max(self.now_ms, float(time_ms))

    def ms(self) -> float:
        return self.now_ms

    def seconds(self) -> float:
        return self.now_ms / 1000.0


@dataclass
class Plan:
    """How the stream is replayed: batches and the retraining job's schedule."""

    batch_rows: int
    topic: str
    retrain_every_s: float | None = 3600.0
    retrain_on_drift: bool = True

    @property
    def retrains(self) -> bool:
        return self.retrain_every_s is not None or self.retrain_on_drift


@dataclass
class Replay:
    """What the stream became, row by row (aligned with the stream) and event by event."""

    log_likelihood: np.ndarray  # NaN: dead-lettered
    severity: np.ndarray  # int8, 0 = none; before the cooldown
    alerted: np.ndarray  # bool: an alert was sent (after the cooldown)
    dead_letter: np.ndarray  # bool
    version_index: np.ndarray  # int16, into ``versions``
    versions: list[str]
    severity_names: tuple[str, ...]
    target_alert_rate: float  # the first severity's calibrated share of normal events
    alerts: list[dict[str, Any]] = field(default_factory=list)  # as sent, in order
    dead_letters: dict[str, int] = field(default_factory=dict)  # by reason
    suppressed: int = 0
    batches: list[dict[str, Any]] = field(default_factory=list)  # time, version, thresholds
    drift_events: list[dict[str, Any]] = field(default_factory=list)
    retrains: list[dict[str, Any]] = field(default_factory=list)
    reloads: list[dict[str, Any]] = field(default_factory=list)


class Backtest:
    """Replays one stream; ``run()`` returns a ``Replay``."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        plan: Plan,
        progress: Progress | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.plan = plan
        self.progress = progress

    def _scorer(self, version: str | None) -> Scorer:
        bundle = self.registry.load(version)
        return Scorer(bundle, self.settings.features, self.settings.thresholds)

    def run(self, stream: Stream) -> Replay:
        s = self.settings
        n = len(stream)
        if n == 0:
            from detector.errors import DataError

            raise DataError("nothing to stream: the part after training has no rows")
        clock = EventClock(float(stream.times_ms[0]))
        scorer = self._scorer(None)
        state = PipelineState(EventParser(s.event), Cooldown(s.service.alert_cooldown_s))
        state.temporal = _temporal(scorer, None, s)
        metrics = ServiceMetrics()
        topics = MemoryTopic()
        sampler = Sampler(s.drift, s.kafka, metrics, seed=s.model.random_seed)
        monitor = DriftMonitor(s.drift, s.kafka, metrics, clock_ms=clock.ms)
        schedule = RetrainSchedule(
            clock.seconds,
            every_s=self.plan.retrain_every_s,
            on_drift=self.plan.retrain_on_drift,
            trigger_tests=s.retrain.trigger_tests,
        )
        schedule.next_run_s()  # the schedule starts with the stream
        window: deque[SampleRow] = deque(maxlen=s.retrain.window_max_samples)
        retrain_metrics = RetrainMetrics()
        out = Replay(
            log_likelihood=np.full(n, np.nan),
            severity=np.zeros(n, dtype=np.int8),
            alerted=np.zeros(n, dtype=bool),
            dead_letter=np.zeros(n, dtype=bool),
            version_index=np.zeros(n, dtype=np.int16),
            versions=[scorer.version],
            severity_names=tuple(scorer.thresholds.names),
            target_alert_rate=scorer.thresholds.alert_rate,
        )
        pending: tuple[str, float] | None = None  # (promoted version, reload at ms)
        drift_seen = 0
        size = self.plan.batch_rows
        for start in range(0, n, size):
            stop = min(n, start + size)
            batch_times = stream.times_ms[start:stop]
            # The service reloads between batches: a promoted version scores from the first
            # batch that starts service.reload_interval_s of event time after the promotion.
            if pending is not None and batch_times[0] >= pending[1]:
                clock.advance(float(batch_times[0]))
                scorer, state.temporal = self._reload(pending[0], scorer, state, out, clock)
                pending = None
            clock.advance(float(batch_times[-1]))
            values: list[bytes | None] = list(stream.raws[start:stop])
            if stream.coordinates is not None:
                t, p, o, ts = (list(c) for c in zip(*stream.coordinates[start:stop], strict=True))
                records = RecordSlice(t, p, o, ts, stream.keys[start:stop], values)
            else:
                records = RecordSlice(
                    [self.plan.topic] * (stop - start),
                    [0] * (stop - start),
                    list(range(start, stop)),
                    batch_times.tolist(),
                    stream.keys[start:stop],
                    values,
                )
            outcome = process(records, scorer, state, now_ms=clock.ms())
            self._record(out, outcome, start, scorer)
            sb = outcome.scored
            sampler(sb, topics)
            for raw in topics.take(s.kafka.samples_topic):
                window.extend(_rows_of(raw))
            monitor.observe(sb, scorer)
            monitor.evaluate(topics, now=clock.seconds())
            topics.take(s.kafka.drift_topic)
            for event in monitor.events_since(drift_seen):
                fires = schedule.note_drift(event) if s.drift.publish_events else False
                out.drift_events.append(_drift_record(event, clock, fires))
            drift_seen = monitor.raised
            reason = schedule.due() if self.plan.retrains else None
            if reason is not None:
                schedule.ran()
                record = self._retrain(window, clock, reason, retrain_metrics)
                out.retrains.append(record)
                if record["outcome"] == "promoted":
                    at = clock.ms() + s.service.reload_interval_s * 1000.0
                    pending = (record["version"], at)
            if self.progress is not None:
                self.progress(stop, n, f"model ...{scorer.version[-6:]}")
        return out

    def _record(self, out: Replay, outcome: Any, start: int, scorer: Scorer) -> None:
        sb = outcome.scored
        pos = start + np.asarray(sb.scored_index, dtype=np.int64)
        result = sb.result
        if pos.size:
            out.log_likelihood[pos] = result.log_likelihood
            out.severity[pos] = result.severity
        for a in outcome.alerts:
            out.alerted[start + a.position] = True
            out.alerts.append(a.doc)
        for d in outcome.dead_letters:
            out.dead_letter[start + d.position] = True
            out.log_likelihood[start + d.position] = np.nan
            out.severity[start + d.position] = 0
            out.dead_letters[d.reason] = out.dead_letters.get(d.reason, 0) + 1
        out.suppressed += outcome.suppressed
        end = start + outcome.n
        out.version_index[start:end] = out.versions.index(scorer.version)
        thr = scorer.thresholds.log_likelihood
        out.batches.append(
            {
                "first_row": start,
                "rows": outcome.n,
                "model_version": scorer.version,
                "threshold_warning": float(thr[0]),
                "threshold_critical": float(thr[-1]),
            }
        )

    def _retrain(
        self, window: deque[SampleRow], clock: EventClock, reason: str, metrics: RetrainMetrics
    ) -> dict[str, Any]:
        cfg = self.settings.retrain
        aged = age_window(list(window), cfg.window_max_age_s, cfg.window_max_future_s, clock.ms())
        result = retrain_once(
            self.settings,
            registry=self.registry,
            metrics=metrics,
            window=aged.rows,
            now_ms=clock.ms(),
        )
        validation = result.figures.get("validation", {})
        return {
            "event_time": format_time_ms(clock.ms()),
            "event_time_ms": clock.ms(),
            "trigger": reason,
            "outcome": result.outcome,
            "version": result.version,
            "reason": result.reason,
            "window_rows": len(aged.rows),
            "window_too_old_rows": aged.too_old,
            "refusal": result.figures.get("refusal"),
            "candidate_alert_rate": validation.get("candidate_alert_rate"),
            "target_alert_rate": validation.get("target_alert_rate"),
            "duration_s": result.figures.get("duration_s"),
        }

    def _reload(
        self, version: str, scorer: Scorer, state: PipelineState, out: Replay, clock: EventClock
    ) -> tuple[Scorer, TemporalState | None]:
        """The service's hot reload: verify and load the version, keep temporal state if it fits."""
        try:
            new = self._scorer(version)
        except Exception as exc:  # the service refuses the version and keeps scoring
            out.reloads.append(
                {
                    "event_time": format_time_ms(clock.ms()),
                    "event_time_ms": clock.ms(),
                    "version": version,
                    "outcome": "refused",
                    "reason": str(exc),
                }
            )
            return scorer, state.temporal
        if new.version not in out.versions:
            out.versions.append(new.version)
        out.reloads.append(
            {
                "event_time": format_time_ms(clock.ms()),
                "event_time_ms": clock.ms(),
                "version": new.version,
                "outcome": "loaded",
                "previous_version": scorer.version,
            }
        )
        return new, _temporal(new, state.temporal, self.settings)


def _temporal(scorer: Scorer, current: TemporalState | None, s: Settings) -> TemporalState | None:
    """As the service does on a model swap: same windows keep their history."""
    windows = scorer.spec.temporal_plan
    if not windows:
        return None
    if current is not None and current.plan == windows:
        return current
    return TemporalState(windows, s.features.temporal_max_entities)


def _drift_record(event: dict[str, Any], clock: EventClock, fires: bool) -> dict[str, Any]:
    ev = event.get("evidence", {})
    psis = ev.get("psi", {})
    worst = event.get("most_shifted_feature")
    return {
        "event_time": event.get("detected_at"),
        "event_time_ms": clock.ms(),
        "test": event.get("test"),
        "model_version": event.get("model_version"),
        "triggers_retrain": fires,
        "window_events": ev.get("window_events"),
        "alert_rate": ev.get("alert_rate"),
        "target_alert_rate": ev.get("target_alert_rate"),
        "mean_log_likelihood_z": ev.get("mean_log_likelihood_z"),
        "most_shifted_feature": worst,
        "most_shifted_feature_psi": psis.get(worst) if worst else None,
    }
