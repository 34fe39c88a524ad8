"""The demo's story while the stream runs: produce at a steady rate, shift, drift, retrain, reload.

The producer sends the fleet's events at ``rate`` per second. Once a second it looks at
what the service did: new drift events (the first one from a retrain trigger test starts
the retraining job, as ``detector retrain --on-drift`` would) and a change of the model
in service (the hot reload). Each step is marked in the live view.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer

from detector.demo.fleet import Drift, LabelledEvent
from detector.demo.live import LiveView
from detector.demo.summary import Recorder, Sent, retrain_line
from detector.registry.store import ModelRegistry
from detector.retrain.job import retrain_once
from detector.retrain.trigger import triggers_retrain
from detector.settings import Settings
from detector.stream.service import DetectorService

# The retrain window's span in seconds of stream (``retrain.window_max_samples`` is set
# to this many seconds of samples): the job runs once that long has passed since the
# shift, so the window holds post-shift samples only.
WINDOW_SPAN_S = 14.0
# Extra wait beyond the span: alerted rows are not sampled, so samples arrive a little
# slower than events.
WINDOW_MARGIN_S = 2.0
# After the last event, how long to wait for the retrain and then for the reload.
RETRAIN_JOIN_S = 60.0
RELOAD_WAIT_S = 5.0


def stream_story(
    bootstrap: str,
    settings: Settings,
    events: list[LabelledEvent],
    rate: float,
    service: DetectorService,
    recorder: Recorder,
    registry: ModelRegistry,
    view: LiveView,
    drift: Drift | None,
    stop: threading.Event,
    clock: Callable[[], float],
) -> tuple[Sent, dict[str, Any]]:
    """Produce the events; returns where they landed and the retrain outcome (or {})."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    futures = []
    sent_at: list[float] = []
    start = time.monotonic()
    last_status = 0.0
    shift_t: float | None = None
    drift_seen = 0
    retrainer: threading.Thread | None = None
    outcome: dict[str, Any] = {}
    versions_seen = {_version(service)}
    for i, ev in enumerate(events):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if drift is not None and shift_t is None and ev.step >= drift.start_step:
            shift_t = time.monotonic()
            view.mark(
                "shift",
                f"fleet operating point shifts (+{drift.temperature_offset_c} C on every "
                "temperature sensor)",
            )
        sent_at.append(time.time())
        futures.append(
            producer.send(settings.kafka.input_topic, value=ev.raw, key=ev.entity.encode())
        )
        now = time.monotonic()
        if now - last_status < 1.0:
            if stop.is_set():
                break
            continue
        last_status = now
        for event in service.drift.events_since(drift_seen):
            triggers = triggers_retrain(event, settings.retrain.trigger_tests)
            view.mark("drift", _drift_text(event, shift_t is not None, triggers))
            # Like `detector retrain --on-drift`: the first trigger-test event starts a run.
            idle = retrainer is None or (
                not retrainer.is_alive() and outcome.get("outcome") != "promoted"
            )
            if idle and triggers:
                ready_at = (shift_t or now) + WINDOW_SPAN_S + WINDOW_MARGIN_S
                retrainer = threading.Thread(
                    target=lambda at=ready_at: outcome.update(
                        _retrain(settings, registry, view, stop, at, clock)
                    ),
                    name="demo-retrainer",
                    daemon=True,
                )
                retrainer.start()
        drift_seen = service.drift.raised
        _note_reload(service, recorder, view, versions_seen)
        counts = service.metrics.counts()
        view.status(
            i + 1,
            len(events),
            counts.scored,
            counts.alerts,
            counts.dead_lettered,
            _version(service),
        )
        if stop.is_set():
            break
    producer.flush()
    if retrainer is not None:
        retrainer.join(RETRAIN_JOIN_S)
        deadline = time.monotonic() + RELOAD_WAIT_S
        while (
            outcome.get("outcome") == "promoted"
            and _version(service) != outcome["version"]
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        _note_reload(service, recorder, view, versions_seen)
    positions = []
    for f in futures:
        md = f.get(timeout=30)
        positions.append((md.partition, md.offset))
    producer.close()
    return Sent(positions, sent_at), outcome


def _version(service: DetectorService) -> str:
    return service.scorer.version if service.scorer else ""


def _note_reload(
    service: DetectorService, recorder: Recorder, view: LiveView, seen: set[str]
) -> None:
    current = _version(service)
    if current in seen:
        return
    seen.add(current)
    if service.scorer is not None:
        recorder.current_thresholds = service.scorer.thresholds.log_likelihood[[0, -1]].copy()
    view.mark("reload", f"service hot-reloaded model {current} (no restart)")


def _drift_text(event: dict[str, Any], after_shift: bool, triggers: bool) -> str:
    when = "" if after_shift else " (before the shift)"
    if not triggers:
        when += " (faults raise the alert rate; not a retrain trigger)"
    feature = event.get("most_shifted_feature")
    return (
        f"drift: {event['test']} test fired on model ...{str(event['model_version'])[-6:]}{when}"
        + (f", most shifted feature {feature}" if feature and triggers else "")
        + f" (window alert rate {100 * event['evidence']['alert_rate']:.1f}%)"
    )


def _retrain(
    settings: Settings,
    registry: ModelRegistry,
    view: LiveView,
    stop: threading.Event,
    ready_at: float,
    clock: Callable[[], float],
) -> dict[str, Any]:
    if stop.wait(max(0.0, ready_at - time.monotonic())):
        return {}
    view.mark("retrain", "retraining job started on the samples window")
    result = retrain_once(settings, registry=registry, now_ms=clock() * 1000.0).to_dict()
    view.mark("retrain", "retrain " + retrain_line(result))
    return result
