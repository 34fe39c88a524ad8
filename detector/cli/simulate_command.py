"""`detector simulate`: the demo's pump fleet as a producer, against any Kafka cluster.

Two uses, one fleet (``detector/demo/fleet.py``): ``--csv PATH`` writes a healthy history
to train the first model on; otherwise the fleet streams to ``kafka.input_topic`` at
``--rate`` events/s, with the demo's faults (spike, stuck sensor, bearing wear, broken
correlation, missing readings, malformed records) injected into every block of
``--block-steps`` steps. Event times are the wall clock, so samples land inside the
retraining window and latency dashboards mean something.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from detector.cli.app import ConfigOpt, _errors, app, err, settings_for
from detector.cli.checks import check_kafka
from detector.demo.fleet import (
    Drift,
    FleetSpec,
    LabelledEvent,
    default_scenarios,
    normal_events,
    stream_events,
    write_csv,
)
from detector.errors import ConfigError
from detector.logs import setup_logging
from detector.settings import Settings
from detector.stream.reach import check_reachable

BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap servers (kafka.bootstrap_servers)."),
]


def fleet_spec(n_pumps: int, rate: float, seed: int, start: datetime) -> FleetSpec:
    """One step = one reading of every pump: steps are n_pumps / rate seconds apart."""
    return FleetSpec(n_pumps=n_pumps, interval_s=n_pumps / rate, seed=seed, start=start)


def history_csv(path: Path, n_pumps: int, steps: int, seed: int, now: datetime) -> int:
    """A healthy history ending at ``now`` (one reading a second), as a training CSV."""
    spec = FleetSpec(n_pumps=n_pumps, seed=seed, start=now - timedelta(seconds=steps))
    events = normal_events(spec, steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(events, path)
    return len(events)


def blocks(
    n_pumps: int,
    rate: float,
    seed: int,
    block_steps: int,
    faults: bool,
    drift_after_blocks: int | None,
    max_record_bytes: int,
    now: datetime,
) -> Iterator[LabelledEvent]:
    """Endless blocks of the fleet's stream; each block is fresh (next seed, next start).

    A block is generated whole (the fleet's AR noise is simulated per block), so memory is
    bounded by one block however long the stream runs.
    """
    k = 0
    while True:
        spec = fleet_spec(
            n_pumps, rate, seed + k, now + timedelta(seconds=k * block_steps * n_pumps / rate)
        )
        scenarios = [
            sc
            for sc in (default_scenarios(spec, 0, block_steps) if faults else [])
            # The demo's faults name pumps up to pump-14: a smaller fleet gets those it has.
            if sc.entity == "-" or int(sc.entity.rsplit("-", 1)[1]) < n_pumps
        ]
        drift = Drift(0) if drift_after_blocks is not None and k >= drift_after_blocks else None
        yield from stream_events(spec, 0, block_steps, scenarios, drift, max_record_bytes)
        k += 1


def send(
    settings: Settings,
    topic: str,
    events: Iterator[LabelledEvent],
    rate: float,
    limit: int | None,
    stop: dict[str, bool],
) -> int:
    """Send paced at ``rate`` events/s (key = entity) until ``limit`` or a signal."""
    from detector.cli.topic_commands import send_paced

    records = ((e.raw, e.entity.encode()) for e in events)
    return send_paced(settings, topic, records, rate=rate, limit=limit, stop=lambda: stop["flag"])


@app.command()
def simulate(
    rate: Annotated[
        float, typer.Option("--rate", min=1.0, help="Events per second, all pumps together.")
    ] = 200.0,
    pumps: Annotated[
        int, typer.Option("--pumps", min=2, max=1000, help="Pumps in the fleet.")
    ] = 20,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", "-n", min=1, help="Stop after N events (default: run until stopped)."
        ),
    ] = None,
    faults: Annotated[
        bool,
        typer.Option("--faults/--no-faults", help="Inject the demo's faults into every block."),
    ] = True,
    block_steps: Annotated[
        int,
        typer.Option(
            "--block-steps", min=50, help="Steps per block; each block carries one set of faults."
        ),
    ] = 600,
    drift_after_blocks: Annotated[
        int | None,
        typer.Option(help="From this block on, the fleet's temperature reads 2 C higher (drift)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="The fleet's seed (reproducible).")] = 7,
    csv: Annotated[
        Path | None,
        typer.Option("--csv", help="Write a healthy training history here instead of streaming."),
    ] = None,
    steps: Annotated[
        int,
        typer.Option(
            "--steps", min=50, help="With --csv: steps of history (one per pump per second)."
        ),
    ] = 1500,
    topic: Annotated[
        str | None,
        typer.Option("--topic", "-t", help="Topic to send to (default kafka.input_topic)."),
    ] = None,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Stream a simulated pump fleet (faults included) to Kafka, or write its training history."""
    now = datetime.now(UTC)
    if csv is not None:
        with _errors():
            rows = history_csv(csv, pumps, steps, seed, now)
        err.print(
            f"wrote {rows} healthy readings of {pumps} pumps to {csv}; "
            f"train on it: detector train {csv} --label-column label",
            highlight=False,
        )
        return
    with _errors():
        settings = settings_for(config, kafka__bootstrap_servers=bootstrap)
        if not settings.kafka.bootstrap_servers:
            raise ConfigError(
                "kafka.bootstrap_servers is unset: pass --bootstrap HOST:PORT or set "
                "DETECTOR_KAFKA__BOOTSTRAP_SERVERS (or write a training file with --csv PATH)"
            )
        check_kafka(settings)  # the servers' form and the TLS files, before anything starts
        check_reachable(settings.kafka.bootstrap_servers, settings.kafka.bootstrap_timeout_ms / 1e3)
    setup_logging(settings.service.log_format, "WARNING")  # kafka-python: no connection chatter
    stop = {"flag": False}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    target = topic or settings.kafka.input_topic
    events = blocks(
        pumps, rate, seed, block_steps, faults, drift_after_blocks,
        settings.event.max_record_bytes, now,
    )  # fmt: skip
    err.print(
        f"simulating {pumps} pumps at {rate:g} events/s to {target} on "
        f"{settings.kafka.bootstrap_servers}{'' if limit is None else f' ({limit} events)'}",
        highlight=False,
    )
    with _errors():
        sent = send(settings, target, events, rate, limit, stop)
    err.print(f"sent {sent} events to {target}", highlight=False)
