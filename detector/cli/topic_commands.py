"""`detector produce` and `detector consume`: your file onto a topic, a topic onto your screen.

The five-minute walk-through in the README needs both ends without a Kafka tool kit:
``produce`` turns the rows of a training-style file (CSV or JSON lines) into events of the
configured event format (``event.values_key``, ``entity_key``, ``time_key``) and sends them;
``consume`` prints what a topic holds (alerts by default) as JSON lines.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from detector.cli.app import ConfigOpt, _errors, app, err, settings_for
from detector.cli.checks import check_kafka
from detector.errors import BrokerUnavailableError, DataError
from detector.logs import setup_logging
from detector.settings import EventSettings, Settings

BootstrapOpt = Annotated[
    str | None,
    typer.Option("--bootstrap", help="Kafka bootstrap servers (kafka.bootstrap_servers)."),
]


def events_of(
    path: Path, settings: Settings, label_column: str | None, now_ms: int
) -> Iterator[dict[str, Any]]:
    """The file's rows as events in the configured format, in file order.

    A row without a time gets ``now_ms`` plus its position (one millisecond apart), so a
    file without a time column still streams in order and inside the retraining window.
    """
    from detector.io.tables import read_table

    table = read_table(path, settings, label_column)
    if table.errors:
        first = min(table.errors)
        reason, message = table.errors[first]
        raise DataError(
            f"{path}: {len(table.errors)} rows are not valid events (first: row {first + 1}, "
            f"{reason}: {message}); fix them or drop them before producing"
        )
    cfg: EventSettings = settings.event
    for i, values in enumerate(table.rows):
        clean = {k: v for k, v in values.items() if not (isinstance(v, float) and math.isnan(v))}
        event: dict[str, Any] = {}
        entity = table.entities[i] if table.entities is not None else None
        if entity is not None:
            event[cfg.entity_key] = entity
        when = table.times[i] if table.times is not None else None
        event[cfg.time_key] = when if when not in (None, "") else now_ms + i
        if cfg.values_key:
            event[cfg.values_key] = clean
        else:
            event.update(clean)
        yield event


@app.command()
def produce(
    data: Annotated[Path, typer.Argument(help="CSV or JSON-lines file, as for `detector train`.")],
    topic: Annotated[
        str | None,
        typer.Option("--topic", "-t", help="Topic to send to (default kafka.input_topic)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Send only the first N rows.")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="Events per second (default: as fast as the broker takes them)."
        ),
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option("--label-column", "-l", help="Column left out of the events (labels)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--print", help="Print the events as JSON lines instead of sending them."),
    ] = False,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Send a file's rows to a topic as events (or print them with --print)."""
    with _errors():
        settings = settings_for(config, kafka__bootstrap_servers=bootstrap)
        if not dry_run:
            check_kafka(settings)  # before the file is read
            setup_logging(settings.service.log_format, "WARNING")
        target = topic or settings.kafka.input_topic
        events = events_of(data, settings, label_column, int(time.time() * 1000))
        if dry_run:
            for n, event in enumerate(events, start=1):
                sys.stdout.write(orjson.dumps(event).decode() + "\n")
                if limit is not None and n >= limit:
                    break
            return
        sent = _send(settings, target, events, limit, rate)
    err.print(f"sent {sent} events to {target}", highlight=False)


def _send(
    settings: Settings,
    topic: str,
    events: Iterator[dict[str, Any]],
    limit: int | None,
    rate: float | None,
) -> int:
    key_name = settings.event.entity_key
    _check_reachable(settings)
    records = (
        (orjson.dumps(e), str(e[key_name]).encode() if e.get(key_name) is not None else None)
        for e in events
    )
    return send_paced(settings, topic, records, rate=rate, limit=limit)


def send_paced(
    settings: Settings,
    topic: str,
    records: Iterable[tuple[bytes, bytes | None]],
    *,
    rate: float | None,
    limit: int | None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Send ``(value, key)`` records, at most ``rate`` a second, until ``limit`` or ``stop()``.

    One send loop for `produce` and `simulate`: a broker error is a BrokerUnavailableError
    saying how far it got, never a traceback.
    """
    from kafka.errors import KafkaError

    from detector.stream.clients import make_producer

    try:
        producer = make_producer(settings.kafka)
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"cannot reach {settings.kafka.bootstrap_servers}: {type(exc).__name__}; "
            "check kafka.bootstrap_servers (--bootstrap) and the listener it advertises"
        ) from None
    sent = 0
    started = time.monotonic()
    try:
        for value, key in records:
            if stop() or (limit is not None and sent >= limit):
                break
            producer.send(topic, value, key=key)
            sent += 1
            if rate is not None:
                ahead_s = sent / rate - (time.monotonic() - started)
                if ahead_s > 0:
                    time.sleep(ahead_s)
        producer.flush(timeout=settings.kafka.request_timeout_ms / 1000.0)
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"sending to {topic} failed after {sent} events: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        producer.close(timeout=5)
    return sent


@app.command()
def consume(
    topic: Annotated[
        str | None, typer.Argument(help="Topic to read (default kafka.alerts_topic).")
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record, not at the end.")
    ] = False,
    max_records: Annotated[
        int | None, typer.Option("--max", "-n", min=1, help="Stop after this many records.")
    ] = None,
    timeout_s: Annotated[
        float | None, typer.Option(min=0.1, help="Stop after this long without a new record.")
    ] = None,
    headers: Annotated[
        bool,
        typer.Option(
            "--headers", help="Print each record as {key, headers, value} (dead letters)."
        ),
    ] = False,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Print a topic's records as JSON lines (alerts by default); no consumer group is used."""
    with _errors():
        settings = settings_for(config, kafka__bootstrap_servers=bootstrap)
        check_kafka(settings)
        setup_logging(settings.service.log_format, "WARNING")
        name = topic or settings.kafka.alerts_topic
        shown = 0
        for record in _records(settings, name, from_beginning, timeout_s):
            sys.stdout.write(_render(record, headers) + "\n")
            sys.stdout.flush()
            shown += 1
            if max_records is not None and shown >= max_records:
                break
    err.print(f"{shown} records from {name}", highlight=False)


def _render(record: Any, with_headers: bool) -> str:
    value: Any = record.value
    try:
        value = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        value = value.decode("utf-8", "replace")
    if not with_headers:
        return orjson.dumps(value).decode()
    return orjson.dumps(
        {
            "key": record.key.decode("utf-8", "replace") if record.key else None,
            "headers": {k: v.decode("utf-8", "replace") for k, v in record.headers or []},
            "value": value,
        }
    ).decode()


def _records(
    settings: Settings, topic: str, from_beginning: bool, timeout_s: float | None
) -> Iterator[Any]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from detector.stream.clients import consumer_config

    conf = consumer_config(settings.kafka, group_id=None, enable_auto_commit=False)
    _check_reachable(settings)
    try:
        consumer = KafkaConsumer(**conf)
        partitions = consumer.partitions_for_topic(topic)
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"cannot reach {settings.kafka.bootstrap_servers}: {type(exc).__name__}"
        ) from None
    try:
        if not partitions:
            raise DataError(f"topic {topic!r} does not exist on {settings.kafka.bootstrap_servers}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        last = time.monotonic()
        while timeout_s is None or time.monotonic() - last < timeout_s:
            polled = consumer.poll(timeout_ms=200)
            for records in polled.values():
                for record in records:
                    last = time.monotonic()
                    yield record
    finally:
        consumer.close()


def _check_reachable(settings: Settings) -> None:
    """``broker HOST:PORT unreachable (connection refused)`` at once, not after a timeout."""
    from detector.stream.reach import check_reachable

    check_reachable(settings.kafka.bootstrap_servers, settings.kafka.bootstrap_timeout_ms / 1e3)


@app.command()
def broker(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Loopback port to listen on.")] = 9092,
    partitions: Annotated[
        int, typer.Option(min=1, max=1000, help="Partitions of the input topic it creates.")
    ] = 3,
    config: ConfigOpt = None,
) -> None:
    """Run the bundled Kafka-protocol broker (Tansu, in memory) on 127.0.0.1 until Ctrl-C.

    For trying the walk-through without a cluster: it creates the configured topics
    (input, alerts, dead letters, samples, drift) and forgets everything when stopped.
    """
    from detector.stream.broker import EmbeddedBroker
    from detector.stream.clients import ensure_topics

    with _errors():
        settings = settings_for(config)
        k = settings.kafka
        with EmbeddedBroker(port=port) as running:
            ensure_topics(
                running.bootstrap_servers,
                {k.input_topic: partitions}
                | dict.fromkeys(
                    [k.alerts_topic, k.dead_letter_topic, k.samples_topic, k.drift_topic], 1
                ),
            )
            err.print(
                f"broker on {running.bootstrap_servers} (topics {k.input_topic}, "
                f"{k.alerts_topic}, {k.dead_letter_topic}, {k.samples_topic}, {k.drift_topic}); "
                f"export DETECTOR_KAFKA__BOOTSTRAP_SERVERS={running.bootstrap_servers}; "
                "Ctrl-C stops it",
                highlight=False,
            )
            # SIGTERM (a service manager, `kill`) must stop the broker too, not orphan it.
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                while True:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                err.print("stopping the broker")
