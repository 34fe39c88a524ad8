"""Commands that talk to Kafka (run, retrain, demo), kept apart so `train` stays light.

Each checks its settings before starting anything (``detector.cli.checks``) and ends with
the exit codes of ``detector.cli.exits``; a broker that cannot be reached is never a
traceback: ``run`` retries with a back-off (one line per attempt), ``retrain`` prints the
``failed`` outcome with the reason and exits 3, ``demo --bootstrap`` exits 3.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from detector.cli.app import ConfigOpt, ModelDirOpt, _errors, app, settings_for
from detector.cli.checks import check_kafka, check_kafka_files, check_output
from detector.cli.exits import ExitCode, is_broker_error
from detector.errors import BrokerUnavailableError, ConfigError, DetectorError
from detector.logs import describe_error, setup_logging

if TYPE_CHECKING:
    from detector.health import HealthServer
    from detector.metrics import RetrainMetrics
    from detector.retrain.job import RetrainOutcome
    from detector.retrain.trigger import DriftTrigger
    from detector.settings import Settings
    from detector.stream.reach import Backoff
    from detector.stream.service import DetectorService

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
    from detector.stream.service import DetectorService

    with _errors():
        settings = settings_for(config, model_dir=model_dir, kafka__bootstrap_servers=bootstrap)
        check_kafka(settings)  # before the metrics server starts or the model loads
        setup_logging(settings.service.log_format, settings.service.log_level)
        service = DetectorService(settings)
        server = _start_health_server(settings, service)
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
    counts = service.metrics.counts()
    log.info(
        "stopped: consumed %d, scored %d, dead-lettered %d",
        counts.consumed,
        counts.scored,
        counts.dead_lettered,
    )
    sys.stdout.flush()


def _start_health_server(settings: Settings, service: DetectorService) -> HealthServer:
    from detector.health import HealthServer

    host, port = settings.service.metrics_host, settings.service.metrics_port
    try:
        return HealthServer(host, port, service.metrics.registry, service.health).start()
    except OSError as exc:
        raise ConfigError(
            f"service.metrics_port = {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "choose a free port, or 0 for any (env DETECTOR_SERVICE__METRICS_PORT)"
        ) from None


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
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve /metrics and /healthz on this port while running.")
    ] = None,
    push_gateway: Annotated[
        str | None, typer.Option(help="Push each run's metrics to this Pushgateway URL.")
    ] = None,
) -> None:
    """Retrain from the samples window; promote the candidate only if it passes the gate.

    Prints each run's outcome as JSON: promoted, rejected, refused, busy (exit 0 with
    --once) or failed (exit 1; 3 when the broker could not be reached or failed).
    """
    import orjson
    from prometheus_client import write_to_textfile

    from detector.metrics import RetrainMetrics

    if not (once or every or on_drift):
        raise typer.BadParameter("choose --once, --every DURATION and/or --on-drift")
    interval_s = parse_duration_s(every) if every else None
    with _errors():
        check_output(metrics_file, "--metrics-file")
        settings = settings_for(config, model_dir=model_dir, kafka__bootstrap_servers=bootstrap)
        check_kafka(settings)
    setup_logging(settings.service.log_format, settings.service.log_level)
    metrics = RetrainMetrics()
    from detector.retrain.exporter import RetrainExporter

    exporter = RetrainExporter(
        metrics, settings.service.metrics_host, metrics_port, push_gateway
    ).start()
    stop = {"flag": False}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def one_run() -> int:
        outcome, code = run_retrain(settings, metrics)
        typer.echo(
            orjson.dumps(outcome.to_dict(), option=orjson.OPT_INDENT_2, default=str).decode()
        )
        if metrics_file is not None:
            write_to_textfile(str(metrics_file), metrics.registry)
        exporter.after_run()
        return code

    if once and not (every or on_drift):
        raise typer.Exit(one_run())

    from detector.stream.reach import Backoff

    runs = 0
    next_run = (
        time.monotonic()
        if once
        else (time.monotonic() + interval_s if interval_s else float("inf"))
    )
    trigger: DriftTrigger | None = None
    trigger_backoff = Backoff()
    next_trigger = time.monotonic()
    while not stop["flag"] and (max_runs is None or runs < max_runs):
        if on_drift and trigger is None and time.monotonic() >= next_trigger:
            trigger, wait_s = _open_trigger(settings, trigger_backoff)
            next_trigger = time.monotonic() + wait_s
        reason = None
        wait = min(1.0, max(0.0, next_run - time.monotonic()))
        if time.monotonic() >= next_run:
            reason = "schedule"
        elif trigger is not None:
            try:
                if trigger.poll(timeout_s=wait):
                    reason = "drift event"
            except Exception as exc:
                if not is_broker_error(exc):
                    raise
                log.warning("drift trigger lost the broker (%s); reopening", describe_error(exc))
                _close_quietly(trigger)
                trigger = None
        else:
            time.sleep(wait)
        if reason is None:
            continue
        log.info("retraining (%s)", reason)
        one_run()
        runs += 1
        next_run = time.monotonic() + interval_s if interval_s else float("inf")
    if trigger is not None:
        _close_quietly(trigger)


def run_retrain(settings: Settings, metrics: RetrainMetrics) -> tuple[RetrainOutcome, int]:
    """One retrain run as (outcome, exit code); a broker or job failure is outcome ``failed``.

    The broker is checked first: ``broker HOST:PORT unreachable (connection refused)`` is
    a better reason than the consumer's ``KafkaTimeoutError`` after bootstrap_timeout_ms.
    """
    from detector.retrain.job import RetrainOutcome, retrain_once
    from detector.stream.reach import check_reachable

    started = time.perf_counter()
    try:
        check_reachable(settings.kafka.bootstrap_servers, settings.kafka.bootstrap_timeout_ms / 1e3)
        outcome = retrain_once(settings, metrics=metrics)
    except Exception as exc:
        broker = is_broker_error(exc)
        if not broker and not isinstance(exc, DetectorError | OSError):
            raise
        reason = str(exc) if isinstance(exc, BrokerUnavailableError) else describe_error(exc)
        if broker and not isinstance(exc, BrokerUnavailableError):
            reason = f"Kafka: {reason}"
        took = time.perf_counter() - started
        metrics.runs.labels("failed").inc()
        metrics.duration.set(took)
        log.error("retrain failed: %s", reason)
        outcome = RetrainOutcome("failed", reason=reason, figures={"duration_s": took})
        return outcome, ExitCode.BROKER if broker else ExitCode.FAILED
    return outcome, ExitCode.FAILED if outcome.outcome == "failed" else ExitCode.OK


def _open_trigger(settings: Settings, backoff: Backoff) -> tuple[DriftTrigger | None, float]:
    """The drift-topic consumer, or (None, seconds to wait) while the broker is unreachable."""
    from detector.retrain.trigger import DriftTrigger
    from detector.stream.reach import check_reachable

    try:
        check_reachable(settings.kafka.bootstrap_servers, settings.kafka.bootstrap_timeout_ms / 1e3)
        trigger = DriftTrigger(settings)
    except Exception as exc:
        if not is_broker_error(exc):
            raise
        delay_s = backoff.next_delay_s()
        why = str(exc) if isinstance(exc, BrokerUnavailableError) else describe_error(exc)
        log.warning("drift trigger: %s; retry %d in %.1f s", why, backoff.failures, delay_s)
        return None, delay_s
    backoff.reset()
    return trigger, 0.0


def _close_quietly(trigger: DriftTrigger) -> None:
    try:
        trigger.close()
    except Exception:  # closing after a broker failure must not mask what happened
        log.debug("drift trigger close failed", exc_info=True)


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
        check_kafka_files(settings)
        if settings.kafka.bootstrap_servers:  # unset: the demo starts its own broker
            from detector.stream.reach import check_reachable

            check_kafka(settings)
            check_reachable(
                settings.kafka.bootstrap_servers, settings.kafka.bootstrap_timeout_ms / 1e3
            )
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
