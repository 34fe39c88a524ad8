"""``detector demo``: a pump fleet streamed through the real service, on a real broker.

The steps: start the bundled broker (unless one is configured) -> simulate a normal period
and train on it -> publish the model -> start ``DetectorService`` (the service's own code,
in a thread) -> stream the fleet at a steady rate with faults injected at known times and,
part way, a fleet-wide shift -> when the service raises drift, run the retraining job,
whose new version the service hot-reloads -> summary on the terminal, as JSON and as an
HTML page with plots. Everything started here is stopped here, on errors and Ctrl-C too.

The jobs live apart: ``fleet`` simulates, ``story`` streams and drives drift/retrain,
``live`` prints the live view, ``summary`` rolls up and prints the result, ``quiet``
sends log records to the run folder's ``demo.log`` instead of the console.

Time: the simulated fleet's story (training history, then the stream) ends at the
injected clock's "now" (``clock``, default ``time.time``), compressed: one step is a
simulated second and the stream runs ``rate / n_pumps`` steps a second. Nothing here
compares a fixed date with the clock, so the demo runs the same any day.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from detector.demo.fleet import (
    Drift,
    FleetSpec,
    default_scenarios,
    normal_events,
    starting_before,
    stream_events,
)
from detector.demo.live import LiveView, read_alerts
from detector.demo.quiet import logs_to_file
from detector.demo.story import WINDOW_SPAN_S, stream_story
from detector.demo.summary import (
    Recorder,
    contributions_by_scenario,
    print_summary,
    summarize,
    timeline_arrays,
)
from detector.health import HealthServer
from detector.model.train import train
from detector.registry.store import ModelRegistry
from detector.report.demo_page import demo_report
from detector.settings import Settings
from detector.stream.broker import EmbeddedBroker, LocalBroker
from detector.stream.clients import ensure_topics, security_config
from detector.stream.service import DetectorService

# Training history: 1,800 steps of the whole fleet (36,000 rows for 20 pumps; 30% of a
# simulated day, whose slow cycle the retrain window of a few seconds can then follow).
TRAIN_STEPS = 1_800
# Where in the stream the fleet's operating point shifts.
DRIFT_AT = 0.40
# How long to wait for the service to join its consumer group (Tansu: ~3 s, DESIGN.md).
JOIN_TIMEOUT_S = 30.0
LOG_FILE = "demo.log"


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
                    "window_max_samples": max(800, int(rate * WINDOW_SPAN_S)),
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
    clock: Callable[[], float] = time.time,
    broker_factory: Callable[[], LocalBroker] = EmbeddedBroker,
) -> Path:
    """Run the demo; returns the run folder (summary.json, report.html, demo.log).

    ``clock``: seconds since the epoch, "now" for the simulated fleet and the retrainer.
    Without a configured cluster it starts ``broker_factory()`` (Tansu unless told otherwise).
    """
    # Soft wrap: a path or a version id is never cut in two, on a terminal or in a pipe.
    console = console or Console(soft_wrap=True)
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = (out_dir / f"demo-{stamp}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    thread_errors: list[str] = []
    with logs_to_file(run_dir / LOG_FILE, thread_errors) as log_file:
        console.print(f"run folder {run_dir} (log records go to {log_file.name})", soft_wrap=True)
        try:
            _run(
                base,
                duration_s,
                rate,
                run_dir,
                with_drift,
                console,
                clock,
                thread_errors,
                broker_factory,
            )
        finally:
            if thread_errors:
                console.print(
                    f"[red]{len(thread_errors)} thread(s) stopped on an error[/] "
                    f"({'; '.join(thread_errors)}); details in {log_file}"
                )
    return run_dir


def _run(
    base: Settings,
    duration_s: float,
    rate: float,
    run_dir: Path,
    with_drift: bool,
    console: Console,
    clock: Callable[[], float],
    thread_errors: list[str],
    broker_factory: Callable[[], LocalBroker],
) -> None:
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
        stream_steps = max(20, int(duration_s * rate / FleetSpec().n_pumps))
        started_at = clock()
        spec = starting_before(started_at, TRAIN_STEPS + stream_steps)
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
            f"published model {v1}: K={c['n_components']} {c['covariance_type']}; an event alerts "
            "when its log-likelihood is below "
            + ", ".join(
                f"{t['log_likelihood']:.2f} ({n}, {t['percentile']:g}% of normal events)"
                for n, t in bundle.thresholds.to_dict().items()
            ),
            soft_wrap=True,
        )

        _create_topics(bootstrap, settings)
        recorder = Recorder()
        recorder.current_thresholds = bundle.thresholds.log_likelihood[[0, -1]].copy()
        service = DetectorService(settings, registry=registry, observers=[recorder])
        server = HealthServer("127.0.0.1", 0, service.metrics.registry, service.health).start()
        metrics_url = f"http://127.0.0.1:{server.port}/metrics"
        console.print(f"service metrics on {metrics_url} (also /healthz, /readyz)")
        threads.append(_thread("detector-service", service.run))
        view = LiveView(console)
        alerts: list[tuple[float, dict[str, Any]]] = []
        threads.append(
            _thread(
                "alerts-reader",
                lambda: read_alerts(bootstrap, settings.kafka.alerts_topic, alerts, stop, view),
            )
        )
        console.print("waiting for the service to join its consumer group ...")
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while service.health.partitions == 0 and time.monotonic() < deadline:
            time.sleep(0.1)

        view.restart()
        recorder.t0 = view.t0
        sent, retrain = stream_story(
            bootstrap,
            settings,
            events,
            rate,
            service,
            recorder,
            registry,
            view,
            drift,
            stop,
            clock,
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
        story = {
            "timeline": view.steps,
            "wall0": view.wall0,
            "first_version": v1,
            "retrain": retrain,
            "target_false_alert_rate": bundle.thresholds.alert_rate,
        }
        summary = summarize(events, scenarios, sent, recorder, alerts, service, story, spec, drift)
        summary = {
            "started_at": datetime.fromtimestamp(started_at, UTC).isoformat(timespec="seconds"),
            **summary,
            "metrics_url": metrics_url,
            "run_dir": str(run_dir),
            "log_file": str(run_dir / LOG_FILE),
            "thread_errors": thread_errors,
            "broker": {
                "bootstrap_servers": bootstrap,
                "embedded": broker is not None,
                "kind": broker.name if broker else "external",
                "pid": broker.pid if broker else None,
            },
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        demo_report(
            run_dir / "report.html",
            summary,
            timeline_arrays(recorder),
            contributions_by_scenario(recorder, sent.positions, events),
        )
        print_summary(console, summary)
        console.print(
            f"\nrun folder: [bold]{run_dir}[/] (summary.json, report.html, {LOG_FILE})",
            soft_wrap=True,
        )
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
