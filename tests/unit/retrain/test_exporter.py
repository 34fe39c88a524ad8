"""The retrainer's metrics: served on /metrics while it lives, pushed after each run."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from detector.metrics import RetrainMetrics
from detector.retrain.exporter import PUSH_JOB, RetrainExporter


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


def test_a_long_running_retrainer_serves_its_counters() -> None:
    # Given a retrainer's metrics after one failed and one promoted run
    metrics = RetrainMetrics()
    metrics.runs.labels("failed").inc()
    metrics.runs.labels("promoted").inc()
    exporter = RetrainExporter(metrics, host="127.0.0.1", port=0).start()
    try:
        # When Prometheus scrapes it
        status, body = get(f"http://127.0.0.1:{exporter.port}/metrics")
        health, _ = get(f"http://127.0.0.1:{exporter.port}/healthz")
    finally:
        exporter.stop()
    # Then it sees both outcomes, and the image's health check passes
    assert status == 200 and health == 200
    assert 'detector_retrain_runs_total{outcome="failed"} 1.0' in body
    assert 'detector_retrain_runs_total{outcome="promoted"} 1.0' in body


class _Gateway(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(("PUT", self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: ClassVar[list[tuple[str, str, bytes]]] = []
    handler = type("Gateway", (_Gateway,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_a_cron_run_pushes_its_outcome_replacing_the_last_runs(
    gateway: tuple[str, list[tuple[str, str, bytes]]],
) -> None:
    url, received = gateway
    # Given a run that failed
    metrics = RetrainMetrics()
    metrics.runs.labels("failed").inc()
    # When it pushes
    ok = RetrainExporter(metrics, push_gateway=url).after_run()
    # Then the gateway got a PUT (replace the group) under the job the alert rules read
    assert ok
    [(method, path, body)] = received
    assert method == "PUT" and path == f"/metrics/job/{PUSH_JOB}"
    assert b'detector_retrain_runs_total{outcome="failed"} 1.0' in body


def test_an_unreachable_gateway_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    # Given a gateway address nothing listens on
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exporter = RetrainExporter(RetrainMetrics(), push_gateway=f"http://127.0.0.1:{port}")
    # When the run pushes; Then it reports failure and says where it tried
    assert exporter.after_run() is False
    assert f"127.0.0.1:{port}" in caplog.text and "--push-gateway" in caplog.text


def test_without_port_or_gateway_it_does_nothing() -> None:
    exporter = RetrainExporter(RetrainMetrics()).start()
    assert exporter.port is None and exporter.after_run() is True
    exporter.stop()
