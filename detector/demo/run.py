"""``detector demo``: a pump fleet streamed through the real service, on a real broker.

The steps: start the bundled broker (unless one is configured) -> simulate a normal period
and train on it -> publish the model -> start ``DetectorService`` (the service's own code,
in a thread) -> stream the fleet at a steady rate with faults injected at known times and,
part way, a fleet-wide shift -> when the service raises drift, run the retraining job,
whose new version the service hot-reloads -> summary on the terminal, as JSON and as an
HTML page with plots. Everything started here is stopped here, on errors and Ctrl-C too.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console
from rich.table import Table

from detector.demo.fleet import (
    Drift,
    FleetSpec,
    LabelledEvent,
    Scenario,
    default_scenarios,
    normal_events,
    stream_events,
)
from detector.health import HealthServer
from detector.model.train import train
from detector.registry.store import ModelRegistry
from detector.report.html import demo_report
from detector.retrain.job import retrain_once
from detector.retrain.trigger import triggers_retrain
from detector.settings import Settings
from detector.stream.broker import EmbeddedBroker, LocalBroker
from detector.stream.clients import ensure_topics, security_config
from detector.stream.service import DetectorService, ScoredBatch

# Training history: 1,800 steps of the whole fleet (36,000 rows for 20 pumps; 30% of a
# simulated day, whose slow cycle the retrain window of a few seconds can then follow).
TRAIN_STEPS = 1_800
# Printed alert lines per second at most; the rest are counted ("+N more").
PRINT_PER_S = 4
# Where in the stream the fleet's operating point shifts.
DRIFT_AT = 0.40
# After drift fires, the demo waits this long so the window holds post-shift samples only.
RETRAIN_WAIT_S = 14.0


@dataclass
class Recorder:
    """A batch observer that keeps every scored row's outcome for the summary and plots."""

    t0: float = field(default_factory=time.monotonic)
    position: list[tuple[int, int]] = field(default_factory=list)
    log_likelihood: list[np.ndarray] = field(default_factory=list)
    severity: list[np.ndarray] = field(default_factory=list)
    thresholds: list[np.ndarray] = field(default_factory=list)
    t_s: list[np.ndarray] = field(default_factory=list)
    contributions: list[tuple[tuple[int, int], dict[str, float]]] = field(default_factory=list)
    dead: list[tuple[int, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (warning, critical) thresholds of the model in use, for the plot.
    current_thresholds: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))

    def __call__(self, sb: ScoredBatch, producer: Any) -> list[Any]:
        now = time.monotonic() - self.t0
        r = sb.result
        b = sb.batch
        pos = [(b.partitions[i], b.offsets[i]) for i in sb.scored_index]
        thr = np.full((len(pos), 2), np.nan)
        with self.lock:
            self.position.extend(pos)
            self.log_likelihood.append(r.log_likelihood.copy())
            self.severity.append(r.severity.copy())
            thr[:] = self.current_thresholds
            self.thresholds.append(thr)
            self.t_s.append(np.full(len(pos), now))
            for row, contribs in r.top_features.items():
                self.contributions.append((pos[row], {c.feature: c.contribution for c in contribs}))
            for p, reason, _ in sb.dead_letters:
                self.dead.append((b.partitions[p], b.offsets[p], reason))
        return []


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    wall0: float = field(default_factory=time.time)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def mark(self, what: str, console: Console | None = None) -> None:
        t = time.monotonic() - self.t0
        self.steps.append({"t_s": t, "what": what})
        if console is not None:
            console.print(f"[bold magenta]{t:6.1f}s  {what}[/]")


def demo_settings(base: Settings, bootstrap: str, run_dir: Path, rate: float) -> Settings:
    tag = uuid.uuid4().hex[:6]
    k = base.kafka.model_copy(
        update={
            "bootstrap_servers": bootstrap,
            "group_id": f"demo-{tag}",
            "input_topic": f"demo-events-{tag}",
            "alerts_topic": f"demo-alerts-{tag}",
            "dead_letter_topic": f"demo-dead-letters-{tag}",
            "samples_topic": f"demo-samples-{tag}",
            "drift_topic": f"demo-drift-{tag}",
            # Tansu completes a group join after half the session timeout (DESIGN.md).
            "session_timeout_ms": 6000,
        }
    )
    return base.model_copy(
        update={
            "kafka": k,
            "registry": base.registry.model_copy(update={"path": run_dir / "models"}),
            "model": base.model.model_copy(
                update={"n_components_max": min(base.model.n_components_max, 6)}
            ),
            "service": base.service.model_copy(
                update={"metrics_port": 0, "metrics_host": "127.0.0.1", "reload_interval_s": 1.0}
            ),
            "event": base.event.model_copy(update={"max_record_bytes": 4096}),
            # A short demo needs a quick drift verdict and a window of post-shift samples.
            "drift": base.drift.model_copy(
                update={
                    "sample_rate": 1.0,
                    "max_samples_per_batch": 1000,
                    "window_events": 4000,
                    "min_window_events": 2500,
                }
            ),
            "retrain": base.retrain.model_copy(
                update={
                    "window_max_samples": max(800, int(rate * RETRAIN_WAIT_S)),
                    "min_samples": 500,
                    "poll_timeout_s": 1.5,
                }
            ),
        }
    )


def run_demo(
    base: Settings,
    *,
    duration_s: float = 60.0,
    rate: float = 400.0,
    out_dir: Path = Path("runs"),
    with_drift: bool = True,
    console: Console | None = None,
    broker_factory: Callable[[], LocalBroker] = EmbeddedBroker,
) -> Path:
    """Run the demo; returns the run folder (summary.json, report.html).

    Without a configured cluster it starts ``broker_factory()`` (Tansu unless told otherwise).
    """
    console = console or Console()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = (out_dir / f"demo-{stamp}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    broker: LocalBroker | None = None
    service: DetectorService | None = None
    server: HealthServer | None = None
    threads: list[threading.Thread] = []
    stop = threading.Event()
    try:
        if base.kafka.bootstrap_servers:
            bootstrap = base.kafka.bootstrap_servers
            console.print(f"using the Kafka cluster at {bootstrap}")
        else:
            broker = broker_factory().start()
            bootstrap = broker.bootstrap_servers
            console.print(f"started {broker.describe()} (pid {broker.pid})")
        settings = demo_settings(base, bootstrap, run_dir, rate)
        spec = FleetSpec()
        stream_steps = max(20, int(duration_s * rate / spec.n_pumps))
        scenarios = default_scenarios(spec, TRAIN_STEPS, stream_steps)
        drift = Drift(TRAIN_STEPS + int(DRIFT_AT * stream_steps)) if with_drift else None
        events = stream_events(
            spec, TRAIN_STEPS, stream_steps, scenarios, drift, settings.event.max_record_bytes
        )

        console.print(
            f"training on {TRAIN_STEPS * spec.n_pumps:,} normal readings of {spec.n_pumps} pumps ..."
        )
        history = normal_events(spec, TRAIN_STEPS)
        bundle = train([e["values"] for e in history], settings)
        registry = ModelRegistry(settings.registry)
        v1 = registry.publish(bundle)
        c = bundle.summary["chosen"]
        console.print(
            f"published model {v1}: K={c['n_components']} {c['covariance_type']}, thresholds "
            + ", ".join(
                f"{n} < {t['log_likelihood']:.2f}" for n, t in bundle.thresholds.to_dict().items()
            )
        )

        _create_topics(bootstrap, settings)
        recorder = Recorder()
        recorder.current_thresholds = bundle.thresholds.log_likelihood[[0, -1]].copy()
        service = DetectorService(settings, registry=registry, observers=[recorder])
        server = HealthServer("127.0.0.1", 0, service.metrics.registry, service.health).start()
        metrics_url = f"http://127.0.0.1:{server.port}/metrics"
        console.print(f"service metrics on {metrics_url} (also /healthz, /readyz)")
        threads.append(_thread("detector-service", service.run))
        alerts: list[tuple[float, dict[str, Any]]] = []
        threads.append(
            _thread(
                "alerts-reader",
                lambda: _read_alerts(
                    bootstrap,
                    settings.kafka.alerts_topic,
                    alerts,
                    stop,
                    console,
                    t0=time.monotonic(),
                ),
            )
        )
        console.print("waiting for the service to join its consumer group ...")
        deadline = time.monotonic() + 30
        while service.health.partitions == 0 and time.monotonic() < deadline:
            time.sleep(0.1)

        timeline = Timeline()
        recorder.t0 = timeline.t0
        positions, sent_at = _stream(
            bootstrap,
            settings,
            events,
            rate,
            service,
            recorder,
            registry,
            timeline,
            drift,
            console,
            stop,
        )
        # Let the service finish what is in flight, then stop it cleanly.
        deadline = time.monotonic() + 30
        while service.consumed < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        service.stop()
        for t in threads:
            t.join(30)
        summary = _summarize(
            events,
            scenarios,
            positions,
            sent_at,
            recorder,
            alerts,
            service,
            timeline,
            spec,
            metrics_url,
            drift,
            stream_steps,
        )
        summary["run_dir"] = str(run_dir)
        summary["broker"] = {
            "bootstrap_servers": bootstrap,
            "embedded": broker is not None,
            "kind": broker.name if broker else "external",
            "pid": broker.pid if broker else None,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        demo_report(
            run_dir / "report.html",
            summary,
            _timeline_arrays(recorder),
            _contributions_by_scenario(recorder, positions, events),
        )
        _print_summary(console, summary)
        console.print(f"\nrun folder: [bold]{run_dir}[/] (summary.json, report.html)")
        return run_dir
    finally:
        stop.set()
        if service is not None:
            service.stop()
        for t in threads:
            t.join(10)
        if server is not None:
            server.stop()
        if broker is not None:
            pid = broker.pid
            broker.close()
            console.print(f"stopped the local broker (pid {pid})")


def _thread(name: str, target: Any) -> threading.Thread:
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t


def _create_topics(bootstrap: str, settings: Settings) -> None:
    k = settings.kafka
    ensure_topics(
        bootstrap,
        {
            k.input_topic: 3,
            k.alerts_topic: 1,
            k.dead_letter_topic: 1,
            k.samples_topic: 1,
            k.drift_topic: 1,
        },
        **security_config(k),
    )


def _read_alerts(
    bootstrap: str,
    topic: str,
    out: list[tuple[float, dict[str, Any]]],
    stop: threading.Event,
    console: Console,
    t0: float,
) -> None:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=20, enable_auto_commit=False
    )
    try:
        parts = None
        while not parts and not stop.is_set():
            parts = consumer.partitions_for_topic(topic)
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        printed_this_second, second, held = 0, 0, 0
        idle_since: float | None = None
        while True:
            polled = consumer.poll(timeout_ms=100)
            now = time.time()
            got = [r for rs in polled.values() for r in rs]
            if stop.is_set():
                if got:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > 1.0:
                    break
            for rec in got:
                alert = orjson.loads(rec.value)
                out.append((now, alert))
                s = int(time.monotonic() - t0)
                if s != second:
                    if held:
                        console.print(f"[dim]        ... +{held} more alerts[/]")
                    second, printed_this_second, held = s, 0, 0
                if printed_this_second < PRINT_PER_S:
                    printed_this_second += 1
                    top = ", ".join(
                        f"{f['feature']}={f['value']}" for f in alert["top_features"][:3]
                    )
                    color = "red" if alert["severity"] == "critical" else "yellow"
                    console.print(
                        f"[{color}]{alert['severity']:>8}[/] {alert['entity']} {alert['event_time']}  score {alert['anomaly_score']:.1f}  <- {top}"
                    )
                else:
                    held += 1
    finally:
        consumer.close()


def _stream(
    bootstrap: str,
    settings: Settings,
    events: list[LabelledEvent],
    rate: float,
    service: DetectorService,
    recorder: Recorder,
    registry: ModelRegistry,
    timeline: Timeline,
    drift: Drift | None,
    console: Console,
    stop: threading.Event,
) -> tuple[list[tuple[int, int]], list[float]]:
    """Produce the events at ``rate`` per second; orchestrate the drift/retrain story."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, key_serializer=str.encode)
    futures = []
    sent_at: list[float] = []
    start = time.monotonic()
    last_status = 0.0
    drift_started = False
    drift_seen = 0
    retrainer: threading.Thread | None = None
    outcome: dict[str, Any] = {}
    versions_seen = {service.scorer.version if service.scorer else ""}
    for i, ev in enumerate(events):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if drift is not None and not drift_started and ev.step >= drift.start_step:
            drift_started = True
            timeline.mark(
                f"fleet operating point shifts (+{drift.temperature_offset_c} C on every temperature sensor)",
                console,
            )
        sent_at.append(time.time())
        futures.append(producer.send(settings.kafka.input_topic, value=ev.raw, key=ev.entity))
        now = time.monotonic()
        if now - last_status >= 1.0:
            last_status = now
            for event in service.drift.events_since(drift_seen):
                triggers = triggers_retrain(event, settings.retrain.trigger_tests)
                when = "" if drift_started else " (before the shift)"
                if not triggers:
                    when += " (faults raise the alert rate; not a retrain trigger)"
                timeline.mark(
                    f"drift event: {event['test']} test on model ...{str(event['model_version'])[-6:]}{when} "
                    f"(window alert rate {100 * event['evidence']['alert_rate']:.1f}%)",
                    console,
                )
                # Like `detector retrain --on-drift`: the first trigger-test event starts a run.
                idle = retrainer is None or (
                    not retrainer.is_alive() and outcome.get("outcome") != "promoted"
                )
                if idle and triggers:
                    retrainer = _thread(
                        "retrainer",
                        lambda: outcome.update(_retrain(settings, registry, timeline, console)),
                    )
            drift_seen = service.drift.raised
            current = service.scorer.version if service.scorer else ""
            if current not in versions_seen:
                versions_seen.add(current)
                if service.scorer is not None:
                    recorder.current_thresholds = service.scorer.thresholds.log_likelihood[
                        [0, -1]
                    ].copy()
                timeline.mark(f"service hot-reloaded model {current}", console)
            m = service.metrics
            console.print(
                f"[dim]{now - start:5.0f}s  sent {i + 1:,}/{len(events):,}  scored {int(m.events.labels('scored')._value.get()):,}  "
                f"alerts {int(sum(m.alerts.labels(s)._value.get() for s in ('warning', 'critical'))):,}  "
                f"dead letters {int(m.events.labels('dead_lettered')._value.get())}  model ...{current[-6:]}[/]"
            )
        if stop.is_set():
            break
    producer.flush()
    if retrainer is not None:
        retrainer.join(60)
        deadline = time.monotonic() + 5
        while (
            outcome.get("version")
            and service.scorer is not None
            and service.scorer.version != outcome["version"]
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        current = service.scorer.version if service.scorer else ""
        if current not in versions_seen:
            timeline.mark(f"service hot-reloaded model {current}", console)
    positions = []
    for f in futures:
        md = f.get(timeout=30)
        positions.append((md.partition, md.offset))
    producer.close()
    return positions, sent_at


def _retrain(
    settings: Settings, registry: ModelRegistry, timeline: Timeline, console: Console
) -> dict[str, Any]:
    time.sleep(RETRAIN_WAIT_S)  # let post-shift samples fill the window
    timeline.mark("retraining job started on the samples window", console)
    result = retrain_once(settings, registry=registry)
    v = result.figures.get("validation", {})
    timeline.mark(
        f"retrain {result.outcome}{' ' + str(result.version) if result.version else ''}"
        + (f": {result.reason}" if result.reason else "")
        + (
            f" (holdout alert rate {100 * v['candidate_alert_rate']:.2f}%)"
            if "candidate_alert_rate" in v
            else ""
        ),
        console,
    )
    return result.to_dict()


def _summarize(
    events: list[LabelledEvent],
    scenarios: list[Scenario],
    positions: list[tuple[int, int]],
    sent_at: list[float],
    recorder: Recorder,
    alerts: list[tuple[float, dict[str, Any]]],
    service: DetectorService,
    timeline: Timeline,
    spec: FleetSpec,
    metrics_url: str,
    drift: Drift | None,
    stream_steps: int,
) -> dict[str, Any]:
    index = {pos: i for i, pos in enumerate(positions)}
    sev = np.concatenate(recorder.severity) if recorder.severity else np.zeros(0, dtype=np.int8)
    rows = [index.get(p, -1) for p in recorder.position]
    by_event = np.zeros(len(events), dtype=np.int8)
    scored = np.zeros(len(events), dtype=bool)
    for r, s in zip(rows, sev, strict=True):
        if r >= 0:
            by_event[r] = max(by_event[r], s)
            scored[r] = True
    dead_pos = {index.get((p, o), -1): reason for p, o, reason in recorder.dead}
    t_ev = np.array(sent_at) - timeline.wall0  # when each event was sent, on the timeline
    steps = np.array([e.step for e in events])
    out_scen = []
    for sc in scenarios:
        idx = [
            i
            for i, e in enumerate(events)
            if (
                e.entity == sc.entity
                and sc.start_step <= e.step < sc.end_step + max(5, sc.duration_steps // 2)
            )
            or (sc.name == "malformed" and e.scenario == "malformed")
        ]
        if sc.expect == "dead_letter":
            mal = [i for i, e in enumerate(events) if e.scenario == "malformed"]
            caught = all(i in dead_pos or not scored[i] for i in mal) and len(mal) > 0
            first = None
        else:
            alerting = [i for i in idx if by_event[i] > 0]
            caught = (
                bool(alerting)
                if sc.expect == "alert"
                else all(scored[i] for i in idx if events[i].scenario == sc.name)
            )
            first = (
                min((events[i].step for i in alerting), default=None)
                if sc.expect == "alert"
                else None
            )
        window = np.flatnonzero(
            (steps >= sc.start_step) & (steps < max(sc.end_step, sc.start_step + 1))
        )
        t_start = float(t_ev[window[0]]) if window.size else None
        t_end = float(t_ev[window[-1]]) if window.size else None
        out_scen.append(
            {
                "name": sc.name,
                "entity": sc.entity,
                "description": sc.description,
                "expect": sc.expect,
                "start_step": sc.start_step,
                "end_step": sc.end_step,
                "caught": caught,
                "delay_s": None
                if first is None
                else max(0.0, (first - sc.start_step) * spec.interval_s),
                "t_start_s": t_start,
                "t_end_s": t_end,
            }
        )
    normal = np.array([e.scenario is None for e in events]) & scored
    phases: dict[str, Any] = {}
    if drift is not None:
        reload_t = next(
            (s["t_s"] for s in timeline.steps if s["what"].startswith("service hot-reloaded")), None
        )
        before = normal & (steps < drift.start_step)
        phases["before_drift"] = float((by_event[before] > 0).mean()) if before.any() else None
        if reload_t is not None:
            during = normal & (steps >= drift.start_step) & (t_ev < reload_t)
            after = normal & (t_ev >= reload_t + 2.0)
            phases["after_drift_before_reload"] = (
                float((by_event[during] > 0).mean()) if during.any() else None
            )
            phases["after_reload"] = float((by_event[after] > 0).mean()) if after.any() else None
        else:
            after = normal & (steps >= drift.start_step)
            phases["after_drift"] = float((by_event[after] > 0).mean()) if after.any() else None
    lat = []
    sent_by_pos = {pos: sent_at[i] for i, pos in enumerate(positions)}
    for received, a in alerts:
        src = a["source"]
        t_sent = sent_by_pos.get((src["partition"], src["offset"]))
        if t_sent is not None:
            lat.append(1000.0 * (received - t_sent))
    m = service.metrics
    dead_by_reason = Counter(reason for _, _, reason in recorder.dead)
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": len(events),
        "scored": int(m.events.labels("scored")._value.get()),
        "dead_letters": int(m.events.labels("dead_lettered")._value.get()),
        "consumed": int(m.consumed._value.get()),
        "alerts_by_severity": {
            s: int(m.alerts.labels(s)._value.get()) for s in ("warning", "critical")
        },
        "false_alert_rate": float((by_event[normal] > 0).mean()) if normal.any() else None,
        "false_alert_rate_by_phase": phases,
        "scenarios": out_scen,
        "dead_letters_by_reason": dict(dead_by_reason),
        "latency_ms": {
            "alerts_measured": len(lat),
            "p50": float(np.percentile(lat, 50)) if lat else None,
            "p99": float(np.percentile(lat, 99)) if lat else None,
            "max": float(np.max(lat)) if lat else None,
        },
        "metrics_url": metrics_url,
        "timeline": timeline.steps,
        "model_versions": sorted({a["model_version"] for _, a in alerts}),
    }


def _timeline_arrays(rec: Recorder) -> dict[str, np.ndarray]:
    if not rec.log_likelihood:
        empty = np.zeros(0)
        return {
            "t_s": empty,
            "log_likelihood": empty,
            "severity": empty,
            "threshold_warning": empty,
            "threshold_critical": empty,
        }
    thr = np.concatenate(rec.thresholds)
    ll = np.concatenate(rec.log_likelihood)
    ok = np.isfinite(ll)
    return {
        "t_s": np.concatenate(rec.t_s)[ok],
        "log_likelihood": ll[ok],
        "severity": np.concatenate(rec.severity)[ok],
        "threshold_warning": thr[ok, 0],
        "threshold_critical": thr[ok, -1],
    }


def _contributions_by_scenario(
    rec: Recorder, positions: list[tuple[int, int]], events: list[LabelledEvent]
) -> dict[str, dict[str, float]]:
    index = {pos: i for i, pos in enumerate(positions)}
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: Counter[str] = Counter()
    for pos, contribs in rec.contributions:
        i = index.get(pos)
        if i is None:
            continue
        name = events[i].scenario or "normal (false alerts / drift)"
        counts[name] += 1
        for f, v in contribs.items():
            sums[name][f] += v
    return {name: {f: v / counts[name] for f, v in s.items()} for name, s in sums.items()}


def _print_summary(console: Console, s: dict[str, Any]) -> None:
    t = Table(title="demo summary")
    t.add_column("")
    t.add_column("")
    t.add_row(
        "events", f"{s['events']:,} ({s['scored']:,} scored, {s['dead_letters']} dead letters)"
    )
    t.add_row("alerts", ", ".join(f"{k}: {v}" for k, v in s["alerts_by_severity"].items()))
    fr = s["false_alert_rate"]
    t.add_row("false alert rate (normal events)", "-" if fr is None else f"{100 * fr:.2f}% overall")
    for phase, v in s["false_alert_rate_by_phase"].items():
        t.add_row(f"  {phase.replace('_', ' ')}", "-" if v is None else f"{100 * v:.2f}%")
    t.add_row(
        "dead letters by reason",
        ", ".join(f"{k}: {v}" for k, v in sorted(s["dead_letters_by_reason"].items())) or "-",
    )
    lat = s["latency_ms"]
    t.add_row(
        "produce -> alert latency",
        "-"
        if lat["p50"] is None
        else f"p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms over {lat['alerts_measured']} alerts",
    )
    t.add_row("metrics endpoint", s["metrics_url"])
    console.print(t)
    st = Table(title="injected scenarios")
    for col in ("scenario", "entity", "expected", "result", "delay (simulated)"):
        st.add_column(col)
    for sc in s["scenarios"]:
        result = (
            ("[green]caught[/]" if sc["caught"] else "[red]missed[/]")
            if sc["expect"] != "scored"
            else ("[green]scored[/]" if sc["caught"] else "[red]not scored[/]")
        )
        st.add_row(
            sc["name"],
            sc["entity"],
            sc["expect"],
            result,
            "-" if sc["delay_s"] is None else f"{sc['delay_s']:.0f} s",
        )
    console.print(st)
    if s["timeline"]:
        tl = Table(title="drift and retraining")
        tl.add_column("t")
        tl.add_column("step")
        for e in s["timeline"]:
            tl.add_row(f"{e['t_s']:.1f}s", e["what"])
        console.print(tl)
