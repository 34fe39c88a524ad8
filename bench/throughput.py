"""Throughput, latency and memory of the service against the transport ceiling, one run.

    python -m bench.throughput [--events 200000] [--reps 3] [--latency-s 20] [--soak-s 300]

Modes, interleaved over repetitions on the same topic, each with a fresh consumer group:

* ``limit``   bare kafka-python consume, same fetch settings, touching only the raw bytes;
* ``naive``   the textbook loop: per event json.loads, scaler.transform(1 row),
              score_samples(1 row), send an alert (on a prefix: it is slow);
* ``service`` the real ``DetectorService`` end to end (decode, validate, score, alerts,
              dead letters, commit after acknowledgement), in this process.

Clocks start after each mode's first batch (group join excluded, reported apart). Ratios
compare figures of the same repetition, since this machine is shared and noisy. Then the
latency mode runs ``detector run`` as its own process, paces a producer at a steady rate
with the produce time in each event; a third party (a process with its own consumer)
times each alert's arrival; the service's RSS is sampled throughout. After the latency
window a bare consumer of the input topic (another process) joins, to time the broker's
own hop for the rest of the soak: it is not there during the window, because on two
cores its CPU alone added 25-60 ms to the alerts' p99.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil
from kafka import KafkaConsumer, KafkaProducer

from detector.demo.fleet import FEATURES as FLEET_FEATURES
from detector.model.train import train
from detector.pipeline import ScoredBatch
from detector.registry.store import ModelRegistry
from detector.settings import Settings, load_settings
from detector.stream.broker import BROKER_KINDS, LocalBroker, local_broker
from detector.stream.clients import ensure_topics
from detector.stream.service import DetectorService

RESULTS = Path(__file__).parent / "results"
# Realistic names make realistic ~200-byte events (the baseline's size): the demo pump's
# six sensors plus two.
FEATURE_NAMES = (*FLEET_FEATURES, "voltage_v", "humidity_pct")
N_FEATURES = len(FEATURE_NAMES)
# Same session timeout as the baseline: Tansu completes a join after half of it.
SESSION_TIMEOUT_MS = 6000
FETCH_MAX_WAIT_MS = 50
MAX_POLL_RECORDS = 1000
# "No growth of RSS": a leak of this much would be 6 MB an hour; warm-up levels off sooner.
RSS_SLOPE_LIMIT_MB_PER_MIN = 0.1
LATENCY_P99_LIMIT_MS = 100.0
# The bare consumer joins this long after the latency window, and its figures are taken
# from this long after it joined (connection and first fetches) for BARE_SLICE_S.
BARE_START_AFTER_WINDOW_S = 2.0
BARE_WARMUP_S = 2.0
BARE_SLICE_S = 20.0
# Once in the soak the service (and its fetch process) is paused this long at this time, a
# backlog as after a restart or a rebalance: its biggest batches, and its heap's high-water
# marks, then come early instead of whenever the test broker slows down.
SOAK_BACKLOG_AT_S = 50.0
SOAK_BACKLOG_S = 3.0
LATENCY_PARTITIONS = 3


# -- data ---------------------------------------------------------------------------------
def regimes(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 5, size=(3, N_FEATURES)) + 50
    scales = rng.uniform(0.5, 2.0, size=(3, N_FEATURES))
    return means, scales


def sample(n: int, seed: int, anomaly_rate: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    means, scales = regimes()
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, n)
    x = means[z] + rng.normal(size=(n, N_FEATURES)) * scales[z]
    anomalous = rng.random(n) < anomaly_rate
    k = int(anomalous.sum())
    x[anomalous, rng.integers(0, N_FEATURES, k)] += (
        rng.choice([-1, 1], k) * 10 * scales[z[anomalous], 0]
    )
    return x, anomalous


def encode_events(x: np.ndarray, start_ms: int) -> list[bytes]:
    names = FEATURE_NAMES
    return [
        orjson.dumps(
            {
                "entity": f"sensor-{i % 500:04d}",
                "ts": start_ms + i,
                "values": dict(zip(names, np.round(r, 4).tolist(), strict=True)),
            }
        )
        for i, r in enumerate(x)
    ]


# -- modes --------------------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def client_cpu_s(broker_pid: int) -> float:
    """CPU of this process and its helpers (the service's fetch process), broker excluded.

    A helper that has exited and been waited for counts in ``children_*``; one still
    running counts through its own times, so the figure is the same either way.
    """
    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        if child.pid != broker_pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += cpu_s(child.pid)
    return float(total)


def tree_rss_mb(process: psutil.Process) -> tuple[float, float]:
    """RSS of a service process with its fetch process (what a replica costs), and of
    the service process alone, in MB."""
    own = process.memory_info().rss
    total = own
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / 2**20, own / 2**20


def tree_fds(process: psutil.Process) -> int:
    """Open file descriptors of a service process and its fetch process (sockets, pipes)."""
    total = process.num_fds()
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.num_fds()
    return int(total)


def consumer_for(bootstrap: str, topic: str) -> KafkaConsumer:
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=MAX_POLL_RECORDS,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=SESSION_TIMEOUT_MS // 3,
    )
    c.subscribe([topic])
    return c


def run_limit(bootstrap: str, topic: str, n: int, broker_pid: int) -> dict[str, Any]:
    consumer = consumer_for(bootstrap, topic)
    subscribed = time.perf_counter()
    seen = touched = 0
    first = None
    while seen < n:
        for records in consumer.poll(timeout_ms=500).values():
            for rec in records:
                touched += len(rec.value)
            seen += len(records)
        if first is None and seen:
            first = (time.perf_counter(), seen, client_cpu_s(broker_pid), cpu_s(broker_pid))
    end = time.perf_counter()
    consumer.close()
    assert first is not None
    return _figures("limit", n, subscribed, first, end, client_cpu_s(broker_pid), cpu_s(broker_pid))


def run_naive(
    settings: Settings, bootstrap: str, topic: str, n: int, broker_pid: int
) -> dict[str, Any]:
    bundle = ModelRegistry(settings.registry).load()
    names = bundle.spec.numeric
    thr = float(bundle.thresholds.log_likelihood[0])
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    consumer = consumer_for(bootstrap, topic)
    subscribed = time.perf_counter()
    seen = alerts = 0
    first = None
    while seen < n:
        for records in consumer.poll(timeout_ms=500).values():
            for rec in records:
                if seen >= n:
                    break
                event = json.loads(rec.value)
                row = np.array([[event["values"][f] for f in names]])
                ll = bundle.mixture.score_samples(bundle.scaler.transform(row))[0]
                if ll < thr:
                    producer.send(
                        "bench-naive-alerts",
                        json.dumps({"entity": event["entity"], "ll": ll}).encode(),
                    )
                    alerts += 1
                seen += 1
        if first is None and seen:
            first = (time.perf_counter(), seen, client_cpu_s(broker_pid), cpu_s(broker_pid))
        if seen:
            consumer.commit()
    producer.flush()
    end = time.perf_counter()
    consumer.close()
    producer.close()
    assert first is not None
    out = _figures("naive", n, subscribed, first, end, client_cpu_s(broker_pid), cpu_s(broker_pid))
    out["alerts"] = alerts
    return out


def run_service(settings: Settings, n: int, broker_pid: int) -> dict[str, Any]:
    run_settings = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(
                update={
                    "group_id": f"bench-{uuid.uuid4().hex[:8]}",
                    "alerts_topic": f"bench-alerts-{uuid.uuid4().hex[:6]}",
                }
            )
        }
    )
    marks: dict[str, Any] = {}

    def first_batch(sb: ScoredBatch, producer: Any) -> list[Any]:
        if "first" not in marks:
            marks["first"] = (
                time.perf_counter(),
                len(sb.batch),
                client_cpu_s(broker_pid),
                cpu_s(broker_pid),
            )
            # Stages from here on, like the clock: the group join is not the service's work.
            marks["stages"] = dict(service.stage_seconds)
        return []

    service = DetectorService(run_settings, observers=[first_batch])
    subscribed = time.perf_counter()
    service.run(max_events=n)
    end = time.perf_counter()
    out = _figures(
        "service", n, subscribed, marks["first"], end, client_cpu_s(broker_pid), cpu_s(broker_pid)
    )
    counts = service.metrics.counts()
    out["alerts"] = counts.alerts
    out["dead_letters"] = counts.dead_lettered
    before = marks["stages"]
    out["stages_us_per_event"] = {
        k: 1e6 * (v - before.get(k, 0.0)) / (n - marks["first"][1])
        for k, v in sorted(service.stage_seconds.items())
    }
    return out


def _figures(
    mode: str,
    n: int,
    subscribed: float,
    first: tuple[float, int, float, float],
    end: float,
    cpu_end: float,
    broker_end: float,
) -> dict[str, Any]:
    t0, n0, cpu0, broker0 = first
    events = n - n0
    wall = end - t0
    return {
        "mode": mode,
        "events": n,
        "events_per_s": events / wall,
        "wall_us_per_event": 1e6 * wall / events,
        "client_cpu_us_per_event": 1e6 * (cpu_end - cpu0) / events,
        "broker_cpu_us_per_event": 1e6 * (broker_end - broker0) / events,
        "join_s": t0 - subscribed,
    }


# -- latency and memory -------------------------------------------------------------------
def run_latency(
    settings: Settings,
    bootstrap: str,
    rate: float,
    duration_s: float,
    window_s: float = 20.0,
    warmup_s: float = 2.0,
) -> dict[str, Any]:
    """Produce-to-alert latency over [warmup_s, window_s) of a steady load of ``duration_s``.

    The load goes on past the window only for the memory soak; latency there is reported per
    30 s (on Tansu's in-memory storage fetch latency grows with the log: a bare consumer
    shows the same trend, so the headline figures use the window the issue specifies).
    The bare consumer starts after the window, so that only the issue's three parties
    (producer, service, alert consumer) share the machine while the headline is measured.
    """
    tag = uuid.uuid4().hex[:8]
    topic, alerts_topic = f"lat-events-{tag}", f"lat-alerts-{tag}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    env.update(
        {
            "DETECTOR_REGISTRY__PATH": str(settings.registry.path),
            "DETECTOR_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "DETECTOR_KAFKA__INPUT_TOPIC": topic,
            "DETECTOR_KAFKA__ALERTS_TOPIC": alerts_topic,
            "DETECTOR_KAFKA__GROUP_ID": f"lat-{tag}",
            "DETECTOR_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "DETECTOR_KAFKA__AUTO_OFFSET_RESET": "latest",
            "DETECTOR_SERVICE__METRICS_PORT": "0",
            "DETECTOR_SERVICE__LOG_LEVEL": "WARNING",
        }
    )
    # Before the service subscribes. Three input partitions keyed by entity, as the baseline
    # ran it (Tansu's in-memory log also slows down less when it is split).
    ensure_topics(bootstrap, {topic: LATENCY_PARTITIONS, alerts_topic: 1})
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ps = psutil.Process(proc.pid)
    # The two measuring consumers run in processes of their own: threads here would wait
    # for the GIL behind the producer loop (5 ms switch interval) and add that to latency.
    mp = multiprocessing.get_context("spawn")
    stop, alerts_out, bare_out = mp.Event(), mp.Queue(), mp.Queue()
    alerts_reader = mp.Process(
        target=alert_consumer, args=(bootstrap, alerts_topic, stop, alerts_out), daemon=True
    )
    # The transport's own share: the same input topic, tailed with no work at all.
    bare_reader = mp.Process(
        target=bare_consumer, args=(bootstrap, topic, stop, bare_out), daemon=True
    )
    bare_from_s = window_s + BARE_START_AFTER_WINDOW_S
    with_bare = duration_s >= bare_from_s + BARE_WARMUP_S + BARE_SLICE_S
    with_backlog = duration_s >= SOAK_BACKLOG_AT_S + 60.0
    bare_pending, backlog_pending = with_bare, with_backlog
    paused: list[psutil.Process] = []
    alerts_reader.start()
    time.sleep(
        SESSION_TIMEOUT_MS / 1000.0
    )  # the service joins its group (half the timeout on Tansu)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    x, _ = sample(int(rate * duration_s) + 1, seed=99, anomaly_rate=0.01)
    names = FEATURE_NAMES
    rss: list[tuple[float, float]] = []  # (s since start, both processes' RSS MB)
    rss_main: list[tuple[float, float]] = []  # the service process alone
    fds: list[tuple[float, int]] = []  # (s since start, open fds of both processes)
    start = time.perf_counter()
    next_rss = start
    start_ms = time.time() * 1000.0
    measured_from_ms = start_ms + warmup_s * 1000.0
    sent = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= duration_s:
            break
        if bare_pending and elapsed >= bare_from_s:
            bare_reader.start()
            bare_pending = False
        if backlog_pending and elapsed >= SOAK_BACKLOG_AT_S:
            paused = [ps, *ps.children(recursive=True)]
            for p in paused:
                p.suspend()
            backlog_pending = False
        if paused and elapsed >= SOAK_BACKLOG_AT_S + SOAK_BACKLOG_S:
            for p in paused:
                p.resume()
            paused = []
        due = int(elapsed * rate)
        while sent < due:
            now_ms = int(time.time() * 1000)
            row = dict(zip(names, np.round(x[sent], 4).tolist(), strict=True))
            entity = f"sensor-{sent % 500:04d}"
            producer.send(
                topic,
                orjson.dumps({"entity": entity, "ts": now_ms, "values": row}),
                key=entity.encode(),
            )
            sent += 1
        if time.perf_counter() >= next_rss:
            t_s, (both_mb, main_mb) = time.perf_counter() - start, tree_rss_mb(ps)
            rss.append((t_s, both_mb))
            rss_main.append((t_s, main_mb))
            with contextlib.suppress(psutil.NoSuchProcess):
                fds.append((t_s, tree_fds(ps)))
            next_rss += 1.0
        time.sleep(0.001)
    for p in paused:  # the run ended within the pause
        p.resume()
    producer.flush()
    time.sleep(2.0)
    peak_mb = max(r for _, r in rss) if rss else None
    stop.set()
    produced, latency, scored = (np.asarray(a) for a in alerts_out.get(timeout=60))
    alerts_reader.join(10)
    created, received = np.empty(0), np.empty(0)
    if with_bare:
        created, received = (np.asarray(a) for a in bare_out.get(timeout=60))
        bare_reader.join(10)
    proc.terminate()
    proc.wait(30)
    # Alerts of events produced in the first warmup_s seconds are excluded (connection warm-up).
    window_end_ms = measured_from_ms + (window_s - warmup_s) * 1000.0
    in_window = (produced >= measured_from_ms) & (produced < window_end_ms)
    kept = latency[in_window]
    slice_from_ms = start_ms + (bare_from_s + BARE_WARMUP_S) * 1000.0
    slice_to_ms = slice_from_ms + BARE_SLICE_S * 1000.0
    return {
        "rate_events_per_s": rate,
        "duration_s": duration_s,
        "window_s": window_s,
        "events_sent": sent,
        "achieved_events_per_s": sent / duration_s,
        "alerts_measured": int(kept.size),
        "p50_ms": float(np.percentile(kept, 50)) if kept.size else None,
        "p90_ms": float(np.percentile(kept, 90)) if kept.size else None,
        "p99_ms": float(np.percentile(kept, 99)) if kept.size else None,
        "max_ms": float(kept.max()) if kept.size else None,
        # p99 per 30-second slice of the run: shows whether latency drifts as the topic grows.
        "p99_ms_by_30s": _p99_by_30s(produced, latency, start_ms),
        # The alert path split at the alert's detected_at: produce -> scored (one broker hop
        # and the detector), then the alert's own hop to its consumer.
        "scored_window_ms": _percentiles(scored[in_window]),
        # The soak's transport reference, seconds [slice_from, slice_to) of the run: the bare
        # consumer's hop, and the alerts' latency in the same slice (now with it on the box).
        "bare_consumer_slice_s": [
            (slice_from_ms - start_ms) / 1000.0,
            (slice_to_ms - start_ms) / 1000.0,
        ]
        if with_bare
        else None,
        "bare_consumer_slice_ms": _percentiles(
            received[(created >= slice_from_ms) & (created < slice_to_ms)]
        ),
        "alerts_bare_slice_ms": _percentiles(
            latency[(produced >= slice_from_ms) & (produced < slice_to_ms)]
        )
        if with_bare
        else None,
        "bare_consumer_p99_ms_by_30s": _p99_by_30s(created, received, start_ms),
        "backlog_s": [SOAK_BACKLOG_AT_S, SOAK_BACKLOG_AT_S + SOAK_BACKLOG_S]
        if with_backlog
        else None,
        "rss_mb": rss,
        "peak_rss_mb": peak_mb,
        "rss_mb_at_60s": _rss_at(rss, 60.0),
        "rss_mb_at_300s": _rss_at(rss, 299.0),
        # Least-squares slope of RSS after the first minute (warm-up), MB per minute.
        "rss_growth_mb_per_min_after_60s": _slope_per_min([(t, r) for t, r in rss if t >= 60.0]),
        "service_process_rss_mb_at_60s": _rss_at(rss_main, 60.0),
        "service_process_rss_mb_last": rss_main[-1][1] if rss_main else None,
        "service_process_rss_growth_mb_per_min_after_60s": _slope_per_min(
            [(t, r) for t, r in rss_main if t >= 60.0]
        ),
        "rss_mb_first_10s_max": max((r for t, r in rss if t <= 10), default=None),
        # The target: no sustained growth. The first half holds the warm-up (heap high-water
        # marks rise while the test broker's slow-down makes batches bigger); a leak keeps
        # climbing through the second half.
        "rss_growth_mb_per_min_second_half": _slope_per_min(
            [(t, r) for t, r in rss if t >= duration_s / 2]
        ),
        "rss_mb_last": rss[-1][1] if rss else None,
        # A leak of sockets or pipes shows as a climbing count; a steady one is flat.
        "open_fds_at_60s": _rss_at([(t, float(n)) for t, n in fds], 60.0),
        "open_fds_last": fds[-1][1] if fds else None,
        "open_fds_max": max((n for _, n in fds), default=None),
    }


def alert_consumer(bootstrap: str, alerts_topic: str, stop: Any, out: Any) -> None:
    """Child process: the alerts' consumer. Puts (produced ms, produce-to-alert-received ms,
    produce-to-alert-built ms) of every alert on ``out`` at the end, as ``array('d')``s."""
    c = KafkaConsumer(
        alerts_topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        fetch_max_wait_ms=10,
        group_id=None,
    )
    produced_ms, latency_ms, scored_ms = array("d"), array("d"), array("d")
    while not stop.is_set():
        for records in c.poll(timeout_ms=100).values():
            now_ms = time.time() * 1000.0
            for rec in records:
                try:
                    a = orjson.loads(rec.value)
                    produced = datetime.fromisoformat(a["event_time"]).timestamp() * 1000.0
                    detected = datetime.fromisoformat(a["detected_at"]).timestamp() * 1000.0
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
                produced_ms.append(produced)
                latency_ms.append(now_ms - produced)
                scored_ms.append(detected - produced)
    c.close()
    out.put((produced_ms, latency_ms, scored_ms))


def bare_consumer(bootstrap: str, topic: str, stop: Any, out: Any) -> None:
    """Child process: tail ``topic`` like the service does, with no work at all.

    Puts (CreateTime ms, produce-to-receive ms) of every record on ``out`` at the end, as
    two ``array('d')``: no decoding, so what it sees is the broker's and the client's share.
    """
    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_poll_records=MAX_POLL_RECORDS,
        group_id=None,
    )
    created_ms, latency_ms = array("d"), array("d")
    while not stop.is_set():
        for records in c.poll(timeout_ms=100).values():
            now_ms = time.time() * 1000.0
            created_ms.extend(r.timestamp for r in records)
            latency_ms.extend(now_ms - r.timestamp for r in records)
    c.close()
    out.put((created_ms, latency_ms))


def _percentiles(latencies_ms: np.ndarray) -> dict[str, float] | None:
    if not latencies_ms.size:
        return None
    return {f"p{q}": float(np.percentile(latencies_ms, q)) for q in (50, 90, 99)}


def _p99_by_30s(
    produced_ms: np.ndarray, latency_ms: np.ndarray, start_ms: float
) -> dict[str, float]:
    """p99 latency per 30 s of produce time since ``start_ms``."""
    slice_of = ((produced_ms - start_ms) // 30_000).astype(int)
    return {
        f"{30 * k}-{30 * (k + 1)}s": float(np.percentile(latency_ms[slice_of == k], 99))
        for k in np.unique(slice_of[slice_of >= 0])
    }


def _rss_at(rss: list[tuple[float, float]], t_s: float) -> float | None:
    return next((r for t, r in rss if t >= t_s), None)


def _slope_per_min(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 10:
        return None
    t = np.array([p[0] for p in points])
    r = np.array([p[1] for p in points])
    return float(np.polyfit(t / 60.0, r, 1)[0])


# -- report -------------------------------------------------------------------------------
def broker_label(broker: LocalBroker | None) -> str:
    if broker is None:
        return "external"
    if broker.name == "kafka":
        from detector.stream.kafka_broker import KAFKA_VERSION, ApacheKafkaBroker

        heap = broker.heap_mb if isinstance(broker, ApacheKafkaBroker) else 0
        return (
            f"Apache Kafka {KAFKA_VERSION} (KRaft, one node, {heap} MB heap, log on local disk, "
            "same 2 cores)"
        )
    return "embedded Tansu (memory storage, same 2 cores)"


def environment(broker: LocalBroker | None) -> dict[str, Any]:
    import kafka
    import sklearn

    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"nproc={os.cpu_count()}, CPU {cpu}, load {os.getloadavg()}, {platform.platform()}",
        "python": platform.python_version(),
        "libraries": {
            "kafka-python": kafka.__version__,
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "orjson": orjson.__version__,
            "crc32c": _crc32c(),
        },
        "broker": broker_label(broker),
    }


def _crc32c() -> str:
    try:
        import crc32c

        return str(getattr(crc32c, "__version__", "installed"))
    except ImportError:
        return "missing: pure-Python CRC32C (about 4x slower consume)"


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# Service benchmark, {env['date']}",
        "",
        f"- machine: {env['machine']}",
        f"- Python {env['python']}; " + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()),
        f"- broker: {env['broker']}; topic of {report['events']:,} JSON events (~{report['mean_event_bytes']:.0f} B, 8 features, ~1% anomalies), 3 partitions",
        f"- consumer: max_poll_records={MAX_POLL_RECORDS}, fetch_max_wait_ms={FETCH_MAX_WAIT_MS}; naive on a prefix of {report['naive_events']:,} events",
        "",
        "| rep | mode | events/s | x limit (same rep) | wall us/ev | client CPU us/ev | broker CPU us/ev | alerts | join s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rep in report["reps"]:
        limit = rep["limit"]["events_per_s"]
        for mode in ("limit", "naive", "service"):
            f = rep[mode]
            lines.append(
                f"| {rep['rep']} | {mode} | {f['events_per_s']:,.0f} | {f['events_per_s'] / limit:.2f} | {f['wall_us_per_event']:.1f} | "
                f"{f['client_cpu_us_per_event']:.1f} | {f['broker_cpu_us_per_event']:.1f} | {f.get('alerts', 0):,} | {f['join_s']:.1f} |"
            )
    r = report["ratios"]
    lines += [
        "",
        f"**service / limit = {r['service_over_limit_median']:.2f}** (per rep: {', '.join(f'{v:.2f}' for v in r['service_over_limit'])}; target >= 0.6)  ",
        f"**service / naive = {r['service_over_naive_median']:.1f}x** (per rep: {', '.join(f'{v:.1f}' for v in r['service_over_naive'])}; target >= 20)",
        "",
        "Where the service's time goes (us per event, median over reps). Fetching and record decoding run in the "
        "fetch process (`service.fetch_process`), in parallel; `poll` is the main loop's wait for the next batch "
        "(near zero when the fetch process keeps ahead). Client CPU counts both processes.",
        "",
        "| stage | us/event |",
        "|---|---:|",
    ]
    for stage, us in report["service_stages_us_per_event"].items():
        lines.append(f"| {stage} | {us:.2f} |")
    lat = report.get("latency")
    if lat:
        lines += [
            "",
            f"Latency: producer paced at {lat['rate_events_per_s']:,.0f} ev/s (achieved {lat['achieved_events_per_s']:,.0f}), `detector run` in its own process; "
            f"produce-to-alert-received over the {lat['alerts_measured']} alerts of events produced in seconds 2..{lat['window_s']:.0f}; "
            f"the load then goes on to {lat['duration_s']:.0f} s for the memory figures"
            + (
                f", with the service and its fetch process paused in seconds {lat['backlog_s'][0]:.0f}..{lat['backlog_s'][1]:.0f} "
                "(a backlog, as after a restart or a rebalance: the biggest batches come early)"
                if lat.get("backlog_s")
                else ""
            )
            + ". p99 per 30 s over the whole run: "
            + ", ".join(f"{k} {v:.0f} ms" for k, v in lat.get("p99_ms_by_30s", {}).items())
            + ".",
            "",
            _latency_verdict(lat),
            "",
            _split_line(lat),
            "",
            _bare_line(lat),
            "",
            "| p50 ms | p90 ms | p99 ms | max ms | peak RSS MB (both processes) | RSS at 60 s | RSS at 300 s | RSS last | RSS slope after 60 s (MB/min) | service process alone: RSS at 60 s, last, slope |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            f"| {_f(lat['p50_ms'])} | {_f(lat['p90_ms'])} | {_f(lat['p99_ms'])} | {_f(lat['max_ms'])} | {_f(lat['peak_rss_mb'])} | "
            f"{_f(lat['rss_mb_at_60s'])} | {_f(lat['rss_mb_at_300s'])} | {_f(lat['rss_mb_last'])} | "
            f"{_f(lat['rss_growth_mb_per_min_after_60s'], '{:+.2f}')} | "
            f"{_f(lat.get('service_process_rss_mb_at_60s'))}, {_f(lat.get('service_process_rss_mb_last'))}, "
            f"{_f(lat.get('service_process_rss_growth_mb_per_min_after_60s'), '{:+.2f}')} |",
        ]
        slope = lat.get("rss_growth_mb_per_min_second_half")
        if slope is not None and lat["rss_mb_at_60s"] is not None:
            verdict = "met" if abs(slope) < RSS_SLOPE_LIMIT_MB_PER_MIN else "NOT met"
            lines += [
                "",
                f"**RSS (service + fetch process): {lat['rss_mb_at_60s']:.1f} MB after 1 min, "
                f"{_f(lat['rss_mb_at_300s'])} MB after 5 min, {_f(lat['rss_mb_last'])} MB at {lat['duration_s']:.0f} s; "
                f"slope over the second half of the soak "
                f"{slope:+.2f} MB/min; target no growth (|slope| < {RSS_SLOPE_LIMIT_MB_PER_MIN} MB/min): {verdict}**",
            ]
            if lat.get("open_fds_last") is not None:
                lines.append(
                    f"**Open file descriptors (service + fetch process): {_f(lat['open_fds_at_60s'])} "
                    f"after 1 min, {lat['open_fds_last']} at the end (max {lat['open_fds_max']})**"
                )
    return "\n".join(lines) + "\n"


def _latency_verdict(lat: dict[str, Any]) -> str:
    p99 = lat.get("p99_ms")
    if p99 is None:
        return "**Latency: no alerts in the headline window: NOT met**"
    verdict = "met" if p99 < LATENCY_P99_LIMIT_MS else "NOT met"
    return (
        f"**Produce-to-alert p99 = {p99:.1f} ms at {lat['rate_events_per_s']:,.0f} ev/s "
        f"(p50 {lat['p50_ms']:.1f}, p90 {lat['p90_ms']:.1f}, max {lat['max_ms']:.1f}); "
        f"target < {LATENCY_P99_LIMIT_MS:.0f} ms: {verdict}**"
    )


def _split_line(lat: dict[str, Any]) -> str:
    scored = lat.get("scored_window_ms")
    if not scored:
        return "No alerts in the headline window to split."
    return (
        "The same alerts split at the alert's `detected_at`: produce to scored and built "
        f"p50 {scored['p50']:.1f} / p90 {scored['p90']:.1f} / p99 {scored['p99']:.1f} ms (one broker hop, "
        "the fetch process and the detector); the rest is the alert's own hop (produce, acks=all, "
        "the alert consumer's fetch)."
    )


def _bare_line(lat: dict[str, Any]) -> str:
    bare, alerts, when = (
        lat.get("bare_consumer_slice_ms"),
        lat.get("alerts_bare_slice_ms"),
        lat.get("bare_consumer_slice_s"),
    )
    if not bare or not alerts or not when:
        return "No bare-consumer reference: the soak was too short for it (`--soak-s`)."
    by_30s = ", ".join(
        f"{k} {v:.0f} ms" for k, v in lat.get("bare_consumer_p99_ms_by_30s", {}).items()
    )
    return (
        "The broker's own hop, after the window: a bare kafka-python consumer of the input topic "
        f"(another process, no decoding) joined the soak; over seconds {when[0]:.0f}..{when[1]:.0f} it received "
        f"the events p50 {bare['p50']:.1f} / p90 {bare['p90']:.1f} / p99 {bare['p99']:.1f} ms after they were "
        f"produced, while the alerts of the same seconds took p50 {alerts['p50']:.1f} / p90 {alerts['p90']:.1f} / "
        f"p99 {alerts['p99']:.1f} ms (with the bare consumer's CPU now on the same two cores). Its p99 per 30 s: "
        f"{by_30s} (where it grows with the alerts' p99, the growth is the test broker's in-memory log, "
        "not the detector's)."
    )


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def bench_settings(bootstrap: str, topic: str, workdir: Path) -> Settings:
    """The benches' settings: a fresh registry under ``workdir``, ``topic`` as input."""
    return load_settings(
        overrides={
            "registry": {"path": str(workdir / "models")},
            "kafka": {
                "bootstrap_servers": bootstrap,
                "input_topic": topic,
                "session_timeout_ms": SESSION_TIMEOUT_MS,
            },
            "service": {"metrics_port": 0, "log_level": "WARNING"},
        },
        environ={},
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--naive-events", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--latency-s", type=float, default=20.0, help="latency mode duration (0 = skip)"
    )
    ap.add_argument(
        "--soak-s",
        type=float,
        default=300.0,
        help="keep the latency load this long for the RSS check (0 = only --latency-s)",
    )
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--bootstrap", help="use this Kafka instead of starting a local broker")
    ap.add_argument(
        "--broker",
        choices=BROKER_KINDS,
        help="the local broker to start: kafka (Apache Kafka, needs java 17+; the default where "
        "it can run) or tansu (the embedded one)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    # Clocks start after the first batch, so a mode needs more than one batch to time.
    for name in ("events", "naive_events"):
        if getattr(args, name) <= 2 * MAX_POLL_RECORDS:
            ap.error(f"--{name.replace('_', '-')} must be > {2 * MAX_POLL_RECORDS} (two batches)")

    broker: LocalBroker | None = None
    if not args.bootstrap:
        from detector.stream.kafka_broker import default_broker_kind

        kind, why = (args.broker, "--broker") if args.broker else default_broker_kind()
        broker = local_broker(kind)
        print(f"starting the local broker: {kind} ({why}) ...", flush=True)
        broker.start()
        print(f"{broker.describe()} started in {broker.start_s:.1f} s", flush=True)
    bootstrap = args.bootstrap or broker.bootstrap_servers  # type: ignore[union-attr]
    broker_pid = (broker.pid if broker else None) or os.getpid()
    try:
        workdir = Path(tempfile.mkdtemp(prefix="detector-bench-"))
        topic = f"bench-events-{uuid.uuid4().hex[:6]}"
        settings = bench_settings(bootstrap, topic, workdir)
        print("training the model on 50,000 normal rows ...", flush=True)
        xt, _ = sample(50_000, seed=1)
        names = FEATURE_NAMES
        ModelRegistry(settings.registry).publish(
            train([dict(zip(names, r, strict=True)) for r in xt.tolist()], settings)
        )
        print(f"producing {args.events:,} events to {topic} (3 partitions) ...", flush=True)
        if broker:
            broker.create_topics([topic], partitions=3)
        x, _ = sample(args.events, seed=2, anomaly_rate=0.01)
        raws = encode_events(x, 1_795_000_000_000)
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
        for i, raw in enumerate(raws):
            producer.send(topic, raw, partition=i % 3)
        producer.flush()
        producer.close()
        reps = []
        for rep in range(1, args.reps + 1):
            figures: dict[str, Any] = {"rep": rep}
            for mode in ("limit", "naive", "service"):
                if mode == "limit":
                    figures[mode] = run_limit(bootstrap, topic, args.events, broker_pid)
                elif mode == "naive":
                    figures[mode] = run_naive(
                        settings, bootstrap, topic, args.naive_events, broker_pid
                    )
                else:
                    figures[mode] = run_service(settings, args.events, broker_pid)
                print(
                    f"rep {rep} {mode:8s} {figures[mode]['events_per_s']:>10,.0f} ev/s", flush=True
                )
            reps.append(figures)
        s_l = [r["service"]["events_per_s"] / r["limit"]["events_per_s"] for r in reps]
        s_n = [r["service"]["events_per_s"] / r["naive"]["events_per_s"] for r in reps]
        stage_names = sorted({k for r in reps for k in r["service"]["stages_us_per_event"]})
        report: dict[str, Any] = {
            "environment": environment(broker),
            "events": args.events,
            "naive_events": args.naive_events,
            "mean_event_bytes": float(np.mean([len(r) for r in raws])),
            "reps": reps,
            "ratios": {
                "service_over_limit": s_l,
                "service_over_naive": s_n,
                "service_over_limit_median": statistics.median(s_l),
                "service_over_naive_median": statistics.median(s_n),
            },
            "service_stages_us_per_event": {
                k: statistics.median(r["service"]["stages_us_per_event"].get(k, 0.0) for r in reps)
                for k in stage_names
            },
        }
        if args.latency_s > 0:
            duration = max(args.latency_s, args.soak_s)
            print(f"latency mode: {args.rate:,.0f} ev/s for {duration:.0f} s ...", flush=True)
            report["latency"] = run_latency(
                settings, bootstrap, args.rate, duration, window_s=args.latency_s
            )
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        (args.out / f"throughput-{stamp}.json").write_text(json.dumps(report, indent=2))
        md = markdown(report)
        (args.out / f"throughput-{stamp}.md").write_text(md)
        (args.out / "throughput-latest.md").write_text(md)
        kind = broker.name if broker else "external"
        (args.out / f"throughput-latest-{kind}.md").write_text(md)
        print(md)
    finally:
        if broker:
            broker.close()


if __name__ == "__main__":
    main()
