"""Events/s with 1, 2 and 3 `detector run` replicas in one consumer group.

    python -m bench.replicas [--events 100000] [--reps 2] [--broker kafka|tansu]

One topic of 6 partitions is loaded once; each run starts N replicas (each `detector run`
with its fetch process: two processes a replica) under a fresh group id, each following
the model registry on a Kafka topic (``registry.backend = "kafka"``, no shared disk), and
measures how fast the group's committed offsets move from the first commit to the last
(group joins excluded). Runs are interleaved over the repetitions.

On this machine all replicas, their fetch processes and the broker share the same two
cores, so more replicas cannot add CPU: the figure shows what the group's overhead costs
at equal CPU, not what a cluster of machines would gain.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.throughput import FEATURE_NAMES, bench_settings, encode_events, sample
from detector.model.train import train
from detector.registry.topic import open_registry
from detector.settings import Settings
from detector.stream.broker import BROKER_KINDS, LocalBroker, local_broker

PARTITIONS = 6
SESSION_TIMEOUT_MS = 6000
# The committed offsets are read this often: the timing resolution.
POLL_S = 0.25


def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS))
    finally:
        consumer.close()


def run(settings: Settings, n_replicas: int, n: int, workdir: Path) -> float:
    """Events/s of ``n_replicas`` replicas from the group's first commit to its last."""
    k = settings.kafka
    group = f"bench-replicas-{uuid.uuid4().hex[:8]}"
    base = {key: v for key, v in os.environ.items() if not key.startswith("DETECTOR_")}
    procs = []
    for i in range(n_replicas):
        env = base | {
            "DETECTOR_KAFKA__BOOTSTRAP_SERVERS": str(k.bootstrap_servers),
            "DETECTOR_KAFKA__INPUT_TOPIC": k.input_topic,
            "DETECTOR_KAFKA__GROUP_ID": group,
            "DETECTOR_KAFKA__ALERTS_TOPIC": f"{group}-alerts",
            "DETECTOR_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "DETECTOR_REGISTRY__BACKEND": "kafka",
            "DETECTOR_REGISTRY__TOPIC": settings.registry.topic,
            "DETECTOR_REGISTRY__PATH": str(workdir / f"{group}-{i}"),
            "DETECTOR_SERVICE__METRICS_PORT": "0",
            "DETECTOR_SERVICE__LOG_LEVEL": "WARNING",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "detector", "run"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 600
        done = 0
        while time.monotonic() < deadline:
            done = committed(str(k.bootstrap_servers), group, k.input_topic)
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, done)
            if done >= n:
                break
            time.sleep(POLL_S)
        if first is None or done < n:
            raise RuntimeError(f"{n_replicas} replica(s): {done} of {n} committed in 600 s")
        return (n - first[1]) / max(now - first[0], 1e-9)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--max-replicas", type=int, default=3)
    ap.add_argument("--broker", choices=BROKER_KINDS, default="kafka")
    args = ap.parse_args()

    broker: LocalBroker = local_broker(args.broker)
    broker.start()
    print(f"{broker.describe()} started in {broker.start_s:.1f} s", flush=True)
    try:
        workdir = Path(tempfile.mkdtemp(prefix="detector-bench-replicas-"))
        topic = f"bench-events-{uuid.uuid4().hex[:6]}"
        settings = bench_settings(broker.bootstrap_servers, topic, workdir)
        settings = settings.model_copy(
            update={
                "registry": settings.registry.model_copy(
                    update={
                        "backend": "kafka",
                        "topic": f"bench-models-{uuid.uuid4().hex[:6]}",
                        "path": workdir / "trainer",
                    }
                )
            }
        )
        xt, _ = sample(30_000, seed=1)
        registry = open_registry(settings.registry, settings.kafka)
        registry.publish(
            train([dict(zip(FEATURE_NAMES, r, strict=True)) for r in xt.tolist()], settings)
        )
        registry.close()
        broker.create_topics([topic], partitions=PARTITIONS)
        x, _ = sample(args.events, seed=2, anomaly_rate=0.01)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=10)
        for i, raw in enumerate(encode_events(x, int(time.time() * 1000))):
            producer.send(topic, raw, partition=i % PARTITIONS)
        producer.flush()
        producer.close()

        counts = range(1, args.max_replicas + 1)
        rates: dict[int, list[float]] = {r: [] for r in counts}
        for rep in range(1, args.reps + 1):
            for r in counts:
                rate = run(settings, r, args.events, workdir)
                rates[r].append(rate)
                print(f"rep {rep}: {r} replica(s) {rate:>9,.0f} ev/s", flush=True)
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(
            f"\n{args.events:,} events, {PARTITIONS} partitions, {broker.describe()}; "
            f"nproc={os.cpu_count()}, load average {load}"
        )
        one = statistics.median(rates[1])
        for r in counts:
            med = statistics.median(rates[r])
            per = ", ".join(f"{v:,.0f}" for v in rates[r])
            print(f"{r} replica(s): {med:>9,.0f} ev/s (per rep {per}); x1 replica {med / one:.2f}")
    finally:
        broker.close()


if __name__ == "__main__":
    main()
