"""Commands that talk to Kafka (run, retrain, demo), kept apart so `train` stays light."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType
from typing import Annotated

import typer

from detector.cli.main import ConfigOpt, ModelDirOpt, _errors, app, settings_for
from detector.logs import setup_logging

log = logging.getLogger("detector")


@app.command()
def run(
    model_dir: ModelDirOpt = None,
    config: ConfigOpt = None,
    bootstrap: Annotated[
        str | None,
        typer.Option("--bootstrap", help="Kafka bootstrap servers (kafka.bootstrap_servers)."),
    ] = None,
    max_events: Annotated[
        int | None, typer.Option(help="Stop after this many events (testing).")
    ] = None,
    idle_timeout_s: Annotated[
        float | None, typer.Option(help="Stop after this long without records (testing).")
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
