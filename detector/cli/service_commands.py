"""Commands that talk to Kafka (run, retrain, demo), kept apart so `train` stays light."""

from __future__ import annotations

import logging
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from detector.cli.main import ConfigOpt, ModelDirOpt, _errors, app, settings_for
from detector.logs import setup_logging

log = logging.getLogger("detector")

BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap servers (kafka.bootstrap_servers)."),
]


@app.command()
def run(
    model_dir: ModelDirOpt = None,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    max_events: Annotated[
        int | None, typer.Option(help="Stop after this many events (testing).")
    ] = None,
    idle_timeout_s: Annotated[
        float | None,
        typer.Option(
            help="Stop after this long without records, counted from the last record or partition assignment (testing)."
        ),
    ] = None,
) -> None:
    """Run the detector service: score the input topic, publish alerts and dead letters."""
    from detector.health import HealthServer
    from detector.stream.service import DetectorService

    with _errors():
        settings = settings_for(config, model_dir=model_dir, kafka__bootstrap_servers=bootstrap)
        setup_logging(settings.service.log_format, settings.service.log_level)
        service = DetectorService(settings)
        server = HealthServer(
            settings.service.metrics_host,
            settings.service.metrics_port,
            service.metrics.registry,
            service.health,
        ).start()
    log.info(
        "metrics and health on http://%s:%d/metrics", settings.service.metrics_host, server.port
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info(
            "%s received: finishing the batch in hand, then committing", signal.Signals(signum).name
        )
        service.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        with _errors():
            service.run(max_events=max_events, idle_timeout_s=idle_timeout_s)
    finally:
        server.stop()
    m = service.metrics
    log.info(
        "stopped: consumed %d, scored %d, dead-lettered %d",
        int(m.consumed._value.get()),
        int(m.events.labels("scored")._value.get()),
        int(m.events.labels("dead_lettered")._value.get()),
    )
    sys.stdout.flush()


def parse_duration_s(text: str) -> float:
    """'90s', '30m', '2h', '1d' or plain seconds -> seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    t = text.strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected a duration such as 90s, 30m, 2h") from None
    if value <= 0:
        raise typer.BadParameter(f"{text!r}: the interval must be positive")
    return value


@app.command()
def retrain(
    model_dir: ModelDirOpt = None,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run once and exit (cron, Kubernetes CronJob).")
    ] = False,
    every: Annotated[
        str | None, typer.Option("--every", help="Run periodically, e.g. 30m.")
    ] = None,
    on_drift: Annotated[
        bool, typer.Option("--on-drift", help="Also run when the service publishes a drift event.")
    ] = False,
    metrics_file: Annotated[
        Path | None, typer.Option(help="Write the run's metrics here (Prometheus text format).")
    ] = None,
    max_runs: Annotated[
        int | None, typer.Option(help="Stop after this many runs (testing).")
    ] = None,
) -> None:
    """Retrain from the samples window; promote the candidate only if it passes the gate."""
    import orjson
    from prometheus_client import write_to_textfile

    from detector.metrics import RetrainMetrics
    from detector.retrain.job import retrain_once

    if not (once or every or on_drift):
        raise typer.BadParameter("choose --once, --every DURATION and/or --on-drift")
    with _errors():
        settings = settings_for(config, model_dir=model_dir, kafka__bootstrap_servers=bootstrap)
    setup_logging(settings.service.log_format, settings.service.log_level)
    metrics = RetrainMetrics()
    interval_s = parse_duration_s(every) if every else None
    stop = {"flag": False}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def one_run() -> str:
        with _errors():
            outcome = retrain_once(settings, metrics=metrics)
        typer.echo(
            orjson.dumps(outcome.to_dict(), option=orjson.OPT_INDENT_2, default=str).decode()
        )
        if metrics_file is not None:
            write_to_textfile(str(metrics_file), metrics.registry)
        return outcome.outcome

    if once and not (every or on_drift):
        outcome = one_run()
        raise typer.Exit(1 if outcome == "failed" else 0)

    from detector.retrain.trigger import DriftTrigger

    runs = 0
    next_run = (
        time.monotonic()
        if once
        else (time.monotonic() + interval_s if interval_s else float("inf"))
    )
    with _errors():
        trigger = DriftTrigger(settings) if on_drift else None
    while not stop["flag"] and (max_runs is None or runs < max_runs):
        reason = None
        if time.monotonic() >= next_run:
            reason = "schedule"
        elif trigger is not None and trigger.poll(
            timeout_s=min(1.0, max(0.0, next_run - time.monotonic()))
        ):
            reason = "drift event"
        elif trigger is None:
            time.sleep(min(1.0, max(0.0, next_run - time.monotonic())))
        if reason is None:
            continue
        log.info("retraining (%s)", reason)
        one_run()
        runs += 1
        next_run = time.monotonic() + interval_s if interval_s else float("inf")
    if trigger is not None:
        trigger.close()


class DemoBroker(StrEnum):
    tansu = "tansu"
    kafka = "kafka"


@app.command()
def demo(
    config: ConfigOpt = None,
    bootstrap: Annotated[
        str | None,
        typer.Option("--bootstrap", help="Use this Kafka cluster instead of the bundled broker."),
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", help="Seconds of streaming.", min=5)
    ] = 60.0,
    rate: Annotated[
        float, typer.Option("--rate", help="Events per second (20 pumps).", min=20)
    ] = 400.0,
    out: Annotated[Path, typer.Option("--out", help="Parent folder of the run folder.")] = Path(
        "runs"
    ),
    no_drift: Annotated[
        bool, typer.Option("--no-drift", help="No fleet-wide shift (and so no retraining).")
    ] = False,
    broker: Annotated[
        DemoBroker,
        typer.Option(
            "--broker",
            help="The local broker to start without --bootstrap: tansu (bundled) or kafka "
            "(Apache Kafka; needs java 17+, the jars are fetched once with mvn).",
        ),
    ] = DemoBroker.tansu,
) -> None:
    """Stream a simulated pump fleet through the real service on a real broker, live."""
    from detector.demo.run import run_demo
    from detector.stream.broker import local_broker

    with _errors():
        settings = settings_for(config, kafka__bootstrap_servers=bootstrap)
    setup_logging(settings.service.log_format, "WARNING")

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # the same clean shutdown as Ctrl-C: broker stopped by its PID

    signal.signal(signal.SIGTERM, on_sigterm)
    with _errors():
        run_demo(
            settings,
            duration_s=duration,
            rate=rate,
            out_dir=out,
            with_drift=not no_drift,
            broker_factory=lambda: local_broker("kafka" if broker is DemoBroker.kafka else "tansu"),
        )
