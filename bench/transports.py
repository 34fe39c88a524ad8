"""The service on each Kafka client against that client's own ceiling, one run, one topic.

    python -m bench.transports [--events 200000] [--reps 3] [--broker kafka|tansu]

Modes, interleaved over repetitions on the same topic, each with a fresh consumer group:

* ``limit``             bare kafka-python consume (same fetch settings), raw bytes only;
* ``service``           ``DetectorService`` on kafka-python (its fetch process: the default);
* ``loop_confluent``    a bare confluent-kafka loop that parses and scores each batch with
                        the service's own ``EventParser`` and ``Scorer``, nothing else;
* ``service_confluent`` ``DetectorService`` with ``kafka.client = "confluent"``: all of the
                        service (alerts, dead letters, commits after acknowledgement,
                        drift window, samples) on top of that loop.

Clocks start after each mode's first batch (the group join is excluded), and ratios
compare figures of the same repetition: this machine is shared and noisy. Targets (issue
18): service >= 0.75x limit; service_confluent >= 0.9x loop_confluent and >= 2.5x service.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from kafka import KafkaProducer

from bench.throughput import (
    FEATURE_NAMES,
    FETCH_MAX_WAIT_MS,
    MAX_POLL_RECORDS,
    RESULTS,
    SESSION_TIMEOUT_MS,
    _figures,
    bench_settings,
    client_cpu_s,
    cpu_s,
    encode_events,
    environment,
    run_limit,
    run_service,
    sample,
)
from detector.events import EventParser
from detector.model.scorer import Scorer
from detector.model.train import train
from detector.registry.store import ModelRegistry
from detector.settings import Settings
from detector.stream.broker import BROKER_KINDS, LocalBroker, local_broker
from detector.stream.memory import tuned_for_scoring
from detector.stream.transport.confluent_config import FETCH_QUEUE_BACKOFF_MS

MODES = ("limit", "service", "loop_confluent", "service_confluent")
TARGETS = {
    "service_over_limit": 0.75,
    "service_confluent_over_loop_confluent": 0.9,
    "service_confluent_over_service": 2.5,
}


def run_loop_confluent(settings: Settings, n: int, broker_pid: int) -> dict[str, Any]:
    """Consume with confluent-kafka, parse and score each batch: the confluent ceiling."""
    cfg = settings.kafka
    bundle = ModelRegistry(settings.registry).load()
    scorer = Scorer(bundle, settings.features, settings.thresholds)
    parser = EventParser(settings.event)
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.bootstrap_servers,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": FETCH_MAX_WAIT_MS,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": SESSION_TIMEOUT_MS // 3,
            # The service's own value (see confluent_config): the default idles the loop.
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
        }
    )
    consumer.subscribe([cfg.input_topic])
    subscribed = time.perf_counter()
    seen = 0
    first = None
    # The process prepared as the service prepares its own (one BLAS thread, heap, GC):
    # without it, idle OpenBLAS workers spin on the cores librdkafka needs and the loop
    # was a slower reference than the service built on it.
    with tuned_for_scoring():
        while seen < n:
            messages = consumer.consume(MAX_POLL_RECORDS, 0.5)
            if not messages:
                continue
            parsed = parser.parse_batch([m.value() for m in messages])
            scorer.score(parsed.values)
            seen += len(messages)
            if first is None:
                first = (time.perf_counter(), seen, client_cpu_s(broker_pid), cpu_s(broker_pid))
    end = time.perf_counter()
    consumer.close()
    assert first is not None
    return _figures(
        "loop_confluent", n, subscribed, first, end, client_cpu_s(broker_pid), cpu_s(broker_pid)
    )


def on_client(settings: Settings, client: str) -> Settings:
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"client": client})}
    )


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# Transports: {report['events']:,} events, {len(report['reps'])} repetitions",
        "",
        f"{env['broker']}; {env['machine']}; confluent-kafka {report['confluent_kafka']}",
        "",
        "| rep | " + " | ".join(f"{m} ev/s" for m in MODES) + " |",
        "|---" * (len(MODES) + 1) + "|",
    ]
    for r in report["reps"]:
        cells = " | ".join(f"{r[m]['events_per_s']:,.0f}" for m in MODES)
        lines.append(f"| {r['rep']} | {cells} |")
    lines += [
        "",
        "| ratio (same repetition) | per rep | median | target | met |",
        "|---|---|---|---|---|",
    ]
    for name, target in TARGETS.items():
        values = report["ratios"][name]
        med = statistics.median(values)
        per_rep = ", ".join(f"{v:.2f}" for v in values)
        lines.append(
            f"| {name} | {per_rep} | {med:.2f} | >= {target} | {'yes' if med >= target else 'NO'} |"
        )
    lines += [
        "",
        "Client CPU (us/event, this process and its fetch process): "
        + ", ".join(
            f"{m} {statistics.median(r[m]['client_cpu_us_per_event'] for r in report['reps']):.1f}"
            for m in MODES
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--broker", choices=BROKER_KINDS, help="the local broker to start")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.events <= 2 * MAX_POLL_RECORDS:
        ap.error(f"--events must be > {2 * MAX_POLL_RECORDS} (two batches)")
    import confluent_kafka

    from detector.stream.kafka_broker import default_broker_kind

    kind, why = (args.broker, "--broker") if args.broker else default_broker_kind()
    broker: LocalBroker = local_broker(kind)
    print(f"starting the local broker: {kind} ({why}) ...", flush=True)
    broker.start()
    print(f"{broker.describe()} started in {broker.start_s:.1f} s", flush=True)
    bootstrap = broker.bootstrap_servers
    broker_pid = broker.pid or os.getpid()
    try:
        workdir = Path(tempfile.mkdtemp(prefix="detector-bench-"))
        topic = f"bench-events-{uuid.uuid4().hex[:6]}"
        settings = bench_settings(bootstrap, topic, workdir)
        print("training the model on 50,000 normal rows ...", flush=True)
        xt, _ = sample(50_000, seed=1)
        ModelRegistry(settings.registry).publish(
            train([dict(zip(FEATURE_NAMES, r, strict=True)) for r in xt.tolist()], settings)
        )
        print(f"producing {args.events:,} events to {topic} (3 partitions) ...", flush=True)
        broker.create_topics([topic], partitions=3)
        x, _ = sample(args.events, seed=2, anomaly_rate=0.01)
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
        for i, raw in enumerate(encode_events(x, 1_795_000_000_000)):
            producer.send(topic, raw, partition=i % 3)
        producer.flush()
        producer.close()
        reps = []
        for rep in range(1, args.reps + 1):
            figures: dict[str, Any] = {"rep": rep}
            for mode in MODES:
                if mode == "limit":
                    figures[mode] = run_limit(bootstrap, topic, args.events, broker_pid)
                elif mode == "service":
                    figures[mode] = run_service(settings, args.events, broker_pid)
                elif mode == "loop_confluent":
                    figures[mode] = run_loop_confluent(settings, args.events, broker_pid)
                else:
                    figures[mode] = run_service(
                        on_client(settings, "confluent"), args.events, broker_pid
                    )
                print(
                    f"rep {rep} {mode:18s} {figures[mode]['events_per_s']:>10,.0f} ev/s",
                    flush=True,
                )
            reps.append(figures)

        def ratio(a: str, b: str) -> list[float]:
            return [r[a]["events_per_s"] / r[b]["events_per_s"] for r in reps]

        report: dict[str, Any] = {
            "environment": environment(broker),
            "confluent_kafka": confluent_kafka.__version__,
            "events": args.events,
            "reps": reps,
            "ratios": {
                "service_over_limit": ratio("service", "limit"),
                "service_confluent_over_loop_confluent": ratio(
                    "service_confluent", "loop_confluent"
                ),
                "service_confluent_over_service": ratio("service_confluent", "service"),
            },
        }
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (args.out / f"transports-{stamp}.json").write_text(json.dumps(report, indent=2))
        md = markdown(report)
        (args.out / f"transports-latest-{broker.name}.md").write_text(md)
        print(md)
    finally:
        broker.close()


if __name__ == "__main__":
    main()
