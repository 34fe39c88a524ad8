"""Commands that need a broker, with none there: one line per attempt, documented outcomes.

No broker is started here: a loopback port that is bound but not listening refuses every
connection, exactly what a user sees with Kafka down.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from typer.testing import CliRunner

from detector.cli import service_commands  # noqa: F401  (registers run, retrain, demo)
from detector.cli.exits import ExitCode
from detector.cli.main import app

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()
# The service's back-off: 0.5 s doubling (detector.stream.service.BACKOFF_START_S).
RETRY_LINE = re.compile(
    r"WARNING detector\.stream\.service: broker 127\.0\.0\.1:(\d+) unreachable "
    r"\(connection refused\); retry (\d+) in (\d+\.\d) s$"
)
# What else `detector run` may say at INFO while the broker is down, start to stop.
OTHER_LINES = (
    "INFO    detector: metrics and health on http://127.0.0.1:",
    "INFO    detector.stream.models: scoring with model ",
    "INFO    detector: SIGTERM received: finishing the batch in hand, then committing",
    "INFO    detector: stopped: consumed 0, scored 0, dead-lettered 0",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def run_until_retries(args: list[str], retries: int, deadline_s: float = 60.0) -> list[str]:
    """Start `detector ARGS`, wait for ``retries`` retry lines, SIGTERM it, return stderr lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(
            DETECTOR_SERVICE__METRICS_PORT="0", DETECTOR_SERVICE__METRICS_HOST="127.0.0.1"
        ),
    )
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if sum(bool(RETRY_LINE.search(x)) for x in lines) >= retries:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        seen.wait(deadline_s)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    return lines


def test_run_without_a_broker_writes_one_line_per_attempt_with_the_back_off(
    model_dir: Path, closed_port: int
) -> None:
    # Given a model and a broker address where nothing listens
    # When `detector run` tries for four attempts, then is stopped with SIGTERM
    lines = run_until_retries(
        ["run", "-m", str(model_dir), "--bootstrap", f"127.0.0.1:{closed_port}"], 4
    )
    # Then every attempt is one line of ours naming the broker, the reason and the back-off
    retries = [m for m in map(RETRY_LINE.search, lines) if m]
    assert len(retries) >= 4, "\n".join(lines)
    assert {int(m.group(1)) for m in retries} == {closed_port}
    assert [int(m.group(2)) for m in retries] == list(range(1, len(retries) + 1))
    delays = [float(m.group(3)) for m in retries]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    # ...and nothing else: no kafka-python line, no traceback, no exception class at all
    others = [x for x in lines if not RETRY_LINE.search(x)]
    assert all(any(o in x for o in OTHER_LINES) for x in others), "\n".join(others)
    text = "\n".join(lines)
    assert " kafka." not in text and "Traceback" not in text
    assert "Error" not in text  # ConnectionRefusedError, KafkaConnectionError...


def test_run_without_bootstrap_servers_fails_before_starting_anything(tmp_path: Path) -> None:
    # Given no bootstrap servers, a metrics port already taken and no model at all
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "DETECTOR_SERVICE__METRICS_PORT": str(port),
            "DETECTOR_SERVICE__METRICS_HOST": "127.0.0.1",
        }
        # When `detector run` starts
        r = runner.invoke(app, ["run", "-m", str(tmp_path / "no-models")], env=env)
    # Then it exits 2 naming the setting, its environment variable and its TOML key,
    # before the metrics server (its port would have failed) or the model load
    assert r.exit_code == ExitCode.USAGE == 2
    assert "kafka.bootstrap_servers is not set" in r.stderr
    assert "--bootstrap HOST:PORT" in r.stderr
    assert "DETECTOR_KAFKA__BOOTSTRAP_SERVERS" in r.stderr
    assert 'bootstrap_servers = "HOST:PORT" under [kafka]' in r.stderr
    assert "metrics_port" not in r.output and "no CURRENT" not in r.output


def test_run_with_a_malformed_bootstrap_or_a_busy_metrics_port_is_a_config_error(
    model_dir: Path,
) -> None:
    # Given a bootstrap value without a port
    # When `detector run` starts, Then it names the setting and the bad item
    r = runner.invoke(app, ["run", "-m", str(model_dir), "--bootstrap", "kafka-1"])
    assert r.exit_code == 2
    assert "kafka.bootstrap_servers = 'kafka-1': 'kafka-1' is not HOST:PORT" in r.stderr
    # Given the metrics port taken by another process
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "DETECTOR_SERVICE__METRICS_PORT": str(port),
            "DETECTOR_SERVICE__METRICS_HOST": "127.0.0.1",
        }
        r = runner.invoke(app, ["run", "-m", str(model_dir), "--bootstrap", "127.0.0.1:9"], env=env)
    # Then one line names the port setting and how to fix it, exit 2, no traceback
    assert r.exit_code == 2, r.output
    assert f"service.metrics_port = {port}: cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "DETECTOR_SERVICE__METRICS_PORT" in r.stderr
    assert "Traceback" not in r.output


def test_retrain_once_without_a_broker_prints_the_failed_outcome_and_exits_3(
    model_dir: Path, closed_port: int, tmp_path: Path
) -> None:
    # Given no broker where the samples topic should be
    prom = tmp_path / "retrain.prom"
    # When `detector retrain --once` runs
    started = time.monotonic()
    r = runner.invoke(
        app,
        [
            "retrain",
            "--once",
            "-m",
            str(model_dir),
            "--bootstrap",
            f"127.0.0.1:{closed_port}",
            "--metrics-file",
            str(prom),
        ],
    )
    took = time.monotonic() - started
    # Then stdout is the documented JSON outcome, `failed`, with the reason; exit 3
    assert r.exit_code == ExitCode.BROKER == 3, r.output
    outcome = json.loads(r.stdout)
    assert outcome["outcome"] == "failed" and outcome["version"] is None
    assert outcome["reason"] == f"broker 127.0.0.1:{closed_port} unreachable (connection refused)"
    assert "Traceback" not in r.output
    # ...the metrics file counts the failed run, and it failed at once, not after a timeout
    assert 'detector_retrain_runs_total{outcome="failed"} 1.0' in prom.read_text()
    assert took < 10.0  # kafka.bootstrap_timeout_ms (10 s) was not waited


def test_retrain_on_drift_without_a_broker_retries_the_trigger_and_reports_the_run(
    model_dir: Path, closed_port: int
) -> None:
    # Given no broker, a retrainer that follows drift events and runs once at start
    r = runner.invoke(
        app,
        [
            "retrain",
            "--once",
            "--on-drift",
            "--max-runs",
            "1",
            "-m",
            str(model_dir),
            "--bootstrap",
            f"127.0.0.1:{closed_port}",
        ],
    )
    # Then the run's outcome is `failed` with the reason, and the trigger's attempt is one line
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["outcome"] == "failed"
    assert (
        f"drift trigger: broker 127.0.0.1:{closed_port} unreachable (connection refused); "
        "retry 1 in 0.5 s"
    ) in r.stderr
    assert "Traceback" not in r.output


def test_demo_with_an_unreachable_bootstrap_exits_3_in_one_line(closed_port: int) -> None:
    # Given a user's Kafka address where nothing listens
    # When the demo is pointed at it
    r = runner.invoke(app, ["demo", "--bootstrap", f"127.0.0.1:{closed_port}", "--duration", "5"])
    # Then it stops at once with the reason, exit 3
    assert r.exit_code == 3, r.output
    assert (
        r.stderr.strip()
        == f"error: broker 127.0.0.1:{closed_port} unreachable (connection refused)"
    )


def test_a_missing_tls_file_is_named_before_connecting(model_dir: Path, tmp_path: Path) -> None:
    # Given a CA file that does not exist
    env = {"DETECTOR_KAFKA__SSL_CAFILE": str(tmp_path / "ca.pem")}
    # When retrain starts, Then exit 2 naming the key, the value and the variable
    r = runner.invoke(
        app, ["retrain", "--once", "-m", str(model_dir), "--bootstrap", "127.0.0.1:9"], env=env
    )
    assert r.exit_code == 2
    assert f'kafka.ssl_cafile = "{tmp_path / "ca.pem"}": no such file' in r.stderr
    assert "DETECTOR_KAFKA__SSL_CAFILE" in r.stderr


def test_produce_consume_and_simulate_without_a_broker_exit_3_in_one_line(
    closed_port: int, tmp_path: Path
) -> None:
    from detector.cli import simulate_command, topic_commands  # noqa: F401  (registers them)

    data = tmp_path / "rows.csv"
    data.write_text("entity,a,b\npump-1,1.0,2.0\n")
    expected = f"error: broker 127.0.0.1:{closed_port} unreachable (connection refused)"
    # When a file is produced to, or a topic read from, a broker that is not there
    produced = runner.invoke(app, ["produce", str(data), "--bootstrap", f"127.0.0.1:{closed_port}"])
    consumed = runner.invoke(app, ["consume", "--bootstrap", f"127.0.0.1:{closed_port}"])
    simulated = runner.invoke(
        app, ["simulate", "-n", "5", "--bootstrap", f"127.0.0.1:{closed_port}"]
    )
    # Then each exits 3 with the one reason, and nothing on stdout
    for r in (produced, consumed, simulated):
        assert r.exit_code == ExitCode.BROKER, r.output
        assert r.stderr.strip() == expected and r.stdout == ""
    # ...while --print needs no broker at all
    printed = runner.invoke(app, ["produce", str(data), "--print"])
    assert printed.exit_code == 0 and json.loads(printed.stdout)["entity"] == "pump-1"


def test_consume_without_bootstrap_servers_names_the_setting() -> None:
    from detector.cli import topic_commands  # noqa: F401

    r = runner.invoke(app, ["consume"], env={"DETECTOR_KAFKA__BOOTSTRAP_SERVERS": ""})
    assert r.exit_code == ExitCode.USAGE
    assert "kafka.bootstrap_servers is not set" in r.stderr
