"""Helpers shared by the integration tests: a trained registry, producing, reading back,
and running the service in a thread or as a real `detector run` process."""

from __future__ import annotations

import ast
import contextlib
import os
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from detector.model.train import train
from detector.registry.store import ModelRegistry
from detector.settings import Settings, load_settings
from detector.stream.service import DetectorService
from tests.kafka_client import client_of_run

# Short on both brokers: Tansu completes a group join only after half of it (DESIGN.md);
# on Apache Kafka it bounds how long a killed member holds its partitions.
SESSION_TIMEOUT_MS = 6000
FETCH_MAX_WAIT_MS = 50
FEATURES = ("temp", "vibration", "pressure", "flow")
# Two operating regimes; anomalies are pushed 8 standard deviations out on one feature.
REGIME_MEANS = np.array([[60.0, 0.3, 4.0, 120.0], [75.0, 0.6, 6.0, 80.0]])
REGIME_STD = np.array([2.0, 0.05, 0.3, 5.0])


def normal_rows(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    regime = rng.integers(0, 2, n)
    return REGIME_MEANS[regime] + rng.normal(size=(n, 4)) * REGIME_STD + shift * REGIME_STD


def recent_base_ms() -> int:
    """Event times for test streams: a minute before now, one ms apart.

    The retrainer ages samples from the window's newest event time (not the clock) and
    leaves out stamps more than ``retrain.window_max_future_s`` after the clock; times
    near now are right for both, and no fixed date expires (one did, on 2026-11-25).
    """
    return int(time.time() * 1000) - 60_000


def events_with_anomalies(
    n: int, seed: int, anomaly_every: int = 100
) -> tuple[list[bytes], list[int]]:
    """JSON events; every ``anomaly_every``-th one has a feature pushed far out of range."""
    x = normal_rows(n, seed)
    anomalous = list(range(anomaly_every // 2, n, anomaly_every))
    x[anomalous, 1] += 8 * REGIME_STD[1]
    base_ms = recent_base_ms()
    raws = [
        orjson.dumps(
            {
                "entity": f"pump-{i % 7:02d}",
                "ts": base_ms + i,
                "values": dict(zip(FEATURES, row, strict=True)),
            }
        )
        for i, row in enumerate(x.tolist())
    ]
    return raws, anomalous


def settings_for_test(bootstrap: str, registry_dir: Path, **sections: dict[str, Any]) -> Settings:
    """Settings of a test on this run's broker and Kafka client (``DETECTOR_TEST_CLIENT``)."""
    tag = uuid.uuid4().hex[:8]
    overrides: dict[str, Any] = {
        "registry": {"path": str(registry_dir)},
        "model": {"n_components_max": 3},
        "training": {"n_jobs": 1},
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"g-{tag}",
            "input_topic": f"events-{tag}",
            "alerts_topic": f"alerts-{tag}",
            "dead_letter_topic": f"dead-{tag}",
            "samples_topic": f"samples-{tag}",
            "drift_topic": f"drift-{tag}",
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
            "client": client_of_run(),
        },
        "service": {"reload_interval_s": 0.5, "metrics_port": 0, "poll_timeout_ms": 100},
    }
    for section, values in sections.items():
        overrides.setdefault(section, {}).update(values)
    return load_settings(overrides=overrides, environ={})


def train_and_publish(
    settings: Settings, seed: int = 0, n: int = 20_000, shift: float = 0.0
) -> str:
    x = normal_rows(n, seed, shift)
    rows = [dict(zip(FEATURES, r, strict=True)) for r in x.tolist()]
    return ModelRegistry(settings.registry).publish(train(rows, settings))


@dataclass(frozen=True)
class Produced:
    partition: int
    offset: int


def produce(
    bootstrap: str, topic: str, values: Iterable[bytes], key: bytes | None = None
) -> list[Produced]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        futures = [producer.send(topic, value=v, key=key) for v in values]
        producer.flush(30)
        metas = [f.get(timeout=30) for f in futures]
    finally:
        producer.close()
    return [Produced(m.partition, m.offset) for m in metas]


def read_topic(
    bootstrap: str,
    topic: str,
    expect: int | None = None,
    idle_s: float = 3.0,
    limit_s: float = 60.0,
) -> list[Any]:
    """Every record of ``topic`` (no group: assign + seek, so no join wait)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=FETCH_MAX_WAIT_MS, enable_auto_commit=False
    )
    try:
        deadline = time.monotonic() + limit_s
        parts: set[int] | None = None
        while time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            time.sleep(0.2)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        last = time.monotonic()
        while time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=200)
            got = [r for rs in polled.values() for r in rs]
            out.extend(got)
            if got:
                last = time.monotonic()
            if expect is not None and len(out) >= expect and time.monotonic() - last > 0.5:
                break
            if time.monotonic() - last > idle_s and (expect is None or len(out) >= expect):
                break
        return out
    finally:
        consumer.close()


def alerts_of(bootstrap: str, topic: str, **kw: Any) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_topic(bootstrap, topic, **kw)]


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in parts)
    finally:
        consumer.close()


@contextmanager
def service_thread(settings: Settings, **run_kw: Any) -> Iterator[DetectorService]:
    """A DetectorService running in a thread; stopped and joined on exit."""
    service = DetectorService(settings)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run(**run_kw)
        except BaseException as exc:  # surfaced in the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(60)
        assert not thread.is_alive(), "service thread did not stop"
        if errors:
            raise errors[0]


def held_partitions(log: Path) -> set[str]:
    """The partitions a ``detector run`` process holds now, by its log: each session starts
    with none ("consuming ..."), revocations take away, assignments add."""
    held: set[str] = set()
    for line in log.read_text().splitlines():
        if "detector.stream.service: consuming " in line:
            held = set()
        for word, sign in (("partitions revoked: ", -1), ("partitions assigned: ", 1)):
            if word in line:
                named = set(ast.literal_eval(line.split(word, 1)[1].strip()))
                held = held - named if sign < 0 else held | named
    return held


def wait_for(
    predicate: Any,
    timeout_s: float,
    what: str,
    interval_s: float = 0.2,
    tail: Path | None = None,
) -> None:
    """Wait for ``predicate``; on time-out, fail with the end of the ``tail`` log if given."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    said = f"\n--- end of {tail} ---\n{tail.read_text()[-4000:]}" if tail is not None else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{said}")


def env_for(settings: Settings) -> dict[str, str]:
    """The settings as DETECTOR_* variables: `detector run` configured from the environment alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    k = settings.kafka
    env.update(
        {
            "DETECTOR_REGISTRY__PATH": str(settings.registry.path),
            "DETECTOR_KAFKA__BOOTSTRAP_SERVERS": str(k.bootstrap_servers),
            "DETECTOR_KAFKA__GROUP_ID": k.group_id,
            "DETECTOR_KAFKA__INPUT_TOPIC": k.input_topic,
            "DETECTOR_KAFKA__ALERTS_TOPIC": k.alerts_topic,
            "DETECTOR_KAFKA__DEAD_LETTER_TOPIC": k.dead_letter_topic,
            "DETECTOR_KAFKA__SAMPLES_TOPIC": k.samples_topic,
            "DETECTOR_KAFKA__DRIFT_TOPIC": k.drift_topic,
            "DETECTOR_KAFKA__SESSION_TIMEOUT_MS": str(k.session_timeout_ms),
            "DETECTOR_KAFKA__FETCH_MAX_WAIT_MS": str(k.fetch_max_wait_ms),
            "DETECTOR_KAFKA__CLIENT": k.client,
            "DETECTOR_SERVICE__METRICS_PORT": "0",
            "DETECTOR_SERVICE__RELOAD_INTERVAL_S": "0.5",
            "DETECTOR_SERVICE__POLL_TIMEOUT_MS": "100",
            "DETECTOR_SERVICE__SHUTDOWN_GRACE_S": "20",
        }
    )
    return env


def start_service_process(
    settings: Settings, log_path: Path, *args: str
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "detector", "run", *args],
            env=env_for(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def offline_alert_ids(
    tmp_path: Path, settings: Settings, raws: list[bytes], produced: list[Produced]
) -> set[str]:
    """The alert ids `detector score` implies for the same events, at their Kafka positions."""
    import csv

    from typer.testing import CliRunner

    from detector.cli.main import app
    from detector.stream.alerts import alert_id

    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(raws) + b"\n")
    out = tmp_path / "scores.csv"
    cli = CliRunner().invoke(
        app,
        ["score", str(events), "--model-dir", str(settings.registry.path), "--output", str(out)],
    )
    assert cli.exit_code == 0, cli.output
    with out.open() as fh:
        severities = [r["severity"] for r in csv.DictReader(fh)]
    assert len(severities) == len(raws)
    topic = settings.kafka.input_topic
    return {
        alert_id(topic, produced[i].partition, produced[i].offset)
        for i, sev in enumerate(severities)
        if sev not in ("", "none")
    }


def _cpu_s(stat_path: str) -> float:
    """utime + stime of one /proc task or process, in seconds."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _our_children() -> Iterator[tuple[str, str]]:
    """(pid, module) of each direct child running our code: the fetch process, not a broker."""
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):  # the process ended between listdir and open
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] != me:
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                ours = [a.decode() for a in f.read().split(b"\0") if a.startswith(b"detector.")]
            if ours:
                yield pid, ours[0]


def open_fds() -> int:
    """Open file descriptors of this process and of its fetch process(es)."""
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in ["self", *dict(_our_children())])


def rss_mib() -> float:
    """Resident memory of this process and of its fetch process(es), in MiB."""
    total_kib = 0
    for pid in ["self", *dict(_our_children())]:
        with open(f"/proc/{pid}/status") as f:
            total_kib += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return total_kib / 1024


def _cpu_by_thread_and_child() -> dict[str, float]:
    """CPU seconds of each thread of this process and of each direct child that runs our
    code (the fetch process; not a broker the test started), keyed by a readable name."""
    out: dict[str, float] = {}
    names = {t.native_id: t.name for t in threading.enumerate()}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # the thread ended between listdir and open
            name = names.get(int(tid), "not a Python thread")
            out[f"thread {tid} ({name})"] = _cpu_s(f"/proc/self/task/{tid}/stat")
    for pid, module in _our_children():
        with contextlib.suppress(OSError):
            out[f"child {pid} ({module})"] = _cpu_s(f"/proc/{pid}/stat")
    return out


class CpuWatch:
    """Samples, every ``window_s``, the CPU share of each thread of this process and of
    each child process, and keeps the busiest share seen per window.

    For spin checks: a thread burning a core while the service has nothing to do shows as
    a share near 1.0, whatever the machine's load (CPU time, not wall time, is counted).
    """

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self.windows: list[tuple[float, str]] = []  # (busiest share, whose)
        self._shares: list[dict[str, float]] = []  # every thread's and child's, per window
        # Where each thread of ours over half a core was, in Python, at the end of such a
        # window: what a spin report needs to say which code spins.
        self.stacks: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> CpuWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.window_s + 5)

    def __enter__(self) -> CpuWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        before, t0 = _cpu_by_thread_and_child(), time.monotonic()
        while not self._stop.wait(self.window_s):
            after, t1 = _cpu_by_thread_and_child(), time.monotonic()
            shares = {k: (after[k] - before.get(k, 0.0)) / (t1 - t0) for k in after}
            self._shares.append(shares)
            self._keep_stacks_of_busy_threads(shares)
            self.windows.append(max(((v, k) for k, v in shares.items()), default=(0.0, "nothing")))
            before, t0 = after, t1

    def _keep_stacks_of_busy_threads(self, shares: dict[str, float]) -> None:
        frames = sys._current_frames()
        by_native = {t.native_id: t.ident for t in threading.enumerate()}
        for key, share in shares.items():
            if share < 0.5 or not key.startswith("thread "):
                continue
            ident = by_native.get(int(key.split()[1]))
            frame = frames.get(ident) if ident is not None else None
            if frame is not None:
                self.stacks[key] = "".join(traceback.format_stack(frame)[-8:])

    def busiest(self) -> tuple[float, str]:
        return max(self.windows, default=(0.0, "nothing"))

    def busiest_sustained(self, windows: int = 3) -> tuple[float, str]:
        """The highest mean share of one thread or child over ``windows`` windows in a row.

        A spin is sustained (76-91% of a core for 40 s, as issue 16 saw); a fetch process
        rejoining and decoding a backlog after an outage is a burst (56% in one 5 s window,
        then 28%, on a loaded CI machine), which this tells apart.
        """
        best = (0.0, "nothing")
        for i in range(max(0, len(self._shares) - windows + 1)):
            run = self._shares[i : i + windows]
            for key in run[-1]:
                mean = sum(w.get(key, 0.0) for w in run) / windows
                best = max(best, (mean, key))
        return best
