"""What exactly-once costs: events/s and produce-to-alert latency against at-least-once.

    python -m bench.eos [--events 100000] [--reps 2] [--rate 5000] [--latency-s 20]

Both modes run in the same process against the same broker (Apache Kafka by default: Tansu
has no usable transactions, see tests/integration/test_exactly_once.py), interleaved:

* throughput: the real ``DetectorService`` over the same pre-produced topic, a fresh
  consumer group each run, clocks from the first batch (``bench.throughput.run_service``);
* latency: ``detector run`` as its own process at a steady ``--rate`` with the produce time
  in each event; a consumer in another process times each alert's arrival, reading
  ``read_committed`` under exactly-once (what such a user reads: an alert counts once its
  transaction commits) and ``read_uncommitted`` under at-least-once.

The transaction commits every ``kafka.commit_interval_ms`` (100 ms), like the
at-least-once commits; its alerts are visible only then, so latency grows by about half
that interval plus the commit's round trips.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.throughput import FEATURE_NAMES, bench_settings, encode_events, run_service, sample
from detector.model.train import train
from detector.registry.store import ModelRegistry
from detector.settings import Settings
from detector.stream.broker import EmbeddedBroker, LocalBroker
from detector.stream.clients import ensure_topics

MODES = ("at_least_once", "exactly_once")
SESSION_TIMEOUT_MS = 6000
PARTITIONS = 3
WARMUP_S = 3.0  # alerts of events produced earlier are left out (connections, first commit)


def mode_settings(settings: Settings, delivery: str) -> Settings:
    kafka = settings.kafka.model_copy(
        update={"delivery": delivery, "transactional_id": f"bench-{uuid.uuid4().hex[:8]}"}
    )
    return settings.model_copy(update={"kafka": kafka})


def alert_reader(bootstrap: str, topic: str, isolation: str, stop: Any, out: Any) -> None:
    """Child process: puts (event ms, produce-to-alert-received ms) of every alert, at the end."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation, fetch_max_wait_ms=10)
    # Assigned, not subscribed: a subscription that finds no metadata for a topic created a
    # moment ago waits for the next refresh (5 min) and reads nothing.
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    event_ms, latency_ms = array("d"), array("d")
    while not stop.is_set():
        for records in c.poll(timeout_ms=100).values():
            now_ms = time.time() * 1000.0
            for rec in records:
                produced = float(orjson.loads(rec.value)["source"]["timestamp_ms"])
                event_ms.append(produced)
                latency_ms.append(now_ms - produced)
    c.close()
    out.put((event_ms, latency_ms))


def run_latency(
    settings: Settings, delivery: str, rate: float, duration_s: float
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    topic, alerts = f"eos-lat-{tag}", f"eos-lat-alerts-{tag}"
    bootstrap = str(settings.kafka.bootstrap_servers)
    ensure_topics(bootstrap, {topic: PARTITIONS, alerts: 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    env.update(
        {
            "DETECTOR_REGISTRY__PATH": str(settings.registry.path),
            "DETECTOR_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "DETECTOR_KAFKA__INPUT_TOPIC": topic,
            "DETECTOR_KAFKA__ALERTS_TOPIC": alerts,
            "DETECTOR_KAFKA__GROUP_ID": f"eos-lat-{tag}",
            "DETECTOR_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "DETECTOR_KAFKA__DELIVERY": delivery,
            "DETECTOR_KAFKA__TRANSACTIONAL_ID": f"eos-lat-{tag}",
            "DETECTOR_SERVICE__METRICS_PORT": "0",
            "DETECTOR_SERVICE__LOG_LEVEL": "WARNING",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    isolation = "read_committed" if delivery == "exactly_once" else "read_uncommitted"
    mp = multiprocessing.get_context("spawn")
    stop, out = mp.Event(), mp.Queue()
    reader = mp.Process(target=alert_reader, args=(bootstrap, alerts, isolation, stop, out))
    reader.start()
    time.sleep(SESSION_TIMEOUT_MS / 1000.0)  # the service starts and joins its group
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    x, _ = sample(int(rate * duration_s) + 1, seed=99, anomaly_rate=0.02)
    start, start_ms, sent = time.perf_counter(), time.time() * 1000.0, 0
    try:
        while (elapsed := time.perf_counter() - start) < duration_s:
            while sent < int(elapsed * rate):
                row = dict(zip(FEATURE_NAMES, np.round(x[sent], 4).tolist(), strict=True))
                entity = f"sensor-{sent % 500:04d}"
                producer.send(
                    topic,
                    orjson.dumps({"entity": entity, "values": row}),  # ts = the record's
                    key=entity.encode(),
                )
                sent += 1
            time.sleep(0.001)
        producer.flush()
        time.sleep(2.0)
    finally:
        producer.close()
        stop.set()
        event_ms, latency_ms = (np.asarray(a) for a in out.get(timeout=60))
        reader.join(10)
        proc.terminate()
        proc.wait(30)
    kept = latency_ms[event_ms >= start_ms + WARMUP_S * 1000.0]
    return {
        "achieved_events_per_s": sent / duration_s,
        "alerts": int(kept.size),
        "p50_ms": float(np.percentile(kept, 50)) if kept.size else float("nan"),
        "p99_ms": float(np.percentile(kept, 99)) if kept.size else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--latency-s", type=float, default=20.0)
    ap.add_argument("--broker", choices=("kafka", "tansu"), default="kafka")
    ap.add_argument("--bootstrap", help="use this Kafka instead of starting one")
    args = ap.parse_args()

    broker: LocalBroker | None = None
    if not args.bootstrap:
        if args.broker == "kafka":
            from detector.stream.kafka_broker import ApacheKafkaBroker

            broker = ApacheKafkaBroker()
        else:
            broker = EmbeddedBroker()
        broker.start()
        print(f"{broker.describe()} started in {broker.start_s:.1f} s", flush=True)
    bootstrap = args.bootstrap or broker.bootstrap_servers  # type: ignore[union-attr]
    try:
        workdir = Path(tempfile.mkdtemp(prefix="detector-bench-eos-"))
        topic = f"eos-events-{uuid.uuid4().hex[:6]}"
        settings = bench_settings(bootstrap, topic, workdir)
        xt, _ = sample(30_000, seed=1)
        ModelRegistry(settings.registry).publish(
            train([dict(zip(FEATURE_NAMES, r, strict=True)) for r in xt.tolist()], settings)
        )
        ensure_topics(bootstrap, {topic: PARTITIONS})
        x, _ = sample(args.events, seed=2, anomaly_rate=0.01)
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
        for i, raw in enumerate(encode_events(x, int(time.time() * 1000))):
            producer.send(topic, raw, partition=i % PARTITIONS)
        producer.flush()
        producer.close()
        pid = (broker.pid if broker else None) or os.getpid()

        rates: dict[str, list[float]] = {m: [] for m in MODES}
        for rep in range(1, args.reps + 1):
            for mode in MODES:
                fig = run_service(mode_settings(settings, mode), args.events, pid)
                rates[mode].append(fig["events_per_s"])
                print(f"rep {rep} {mode:14s} {fig['events_per_s']:>9,.0f} ev/s", flush=True)
        latency = {m: run_latency(settings, m, args.rate, args.latency_s) for m in MODES}

        name = broker.describe() if broker else args.bootstrap
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"\nexactly-once cost on {name}, {args.events:,} events x {args.reps} reps")
        print(f"(load average {load} on {os.cpu_count()} cores: a shared machine)")
        print(f"{'mode':14s} {'ev/s (median)':>14s} {'p50 ms':>8s} {'p99 ms':>8s}  at")
        for m in MODES:
            lat = latency[m]
            print(
                f"{m:14s} {float(np.median(rates[m])):>14,.0f} {lat['p50_ms']:>8.1f} "
                f"{lat['p99_ms']:>8.1f}  {lat['achieved_events_per_s']:,.0f} ev/s, "
                f"{lat['alerts']} alerts"
            )
        ratios = [e / a for e, a in zip(rates["exactly_once"], rates["at_least_once"], strict=True)]
        p99 = latency["exactly_once"]["p99_ms"] / latency["at_least_once"]["p99_ms"]
        print(
            f"exactly_once / at_least_once: throughput {float(np.median(ratios)):.2f}x "
            f"(per rep {', '.join(f'{r:.2f}' for r in ratios)}), p99 {p99:.2f}x"
        )
    finally:
        if broker is not None:
            broker.close()


if __name__ == "__main__":
    main()
