"""One small HTTP server for /metrics, /healthz and /readyz.

prometheus-client's own server only serves metrics; Kubernetes probes need liveness
(the loop is turning) and readiness on the same port, so this is a ThreadingHTTPServer in
a daemon thread.

Ready means the replica is doing its job right now: a model is loaded, a Kafka session is
up with partitions assigned, the group coordinator answers (a heartbeat within the
session timeout), no processed work has waited longer than ``commit_overdue_s`` for its
commit, and no partition is held on records that cannot be decoded. Each condition
clears by itself when its cause does.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class HealthState:
    """Written by the loop, read by the probes; plain attributes are atomic enough here.

    ``uncommitted_since`` is the monotonic time the oldest processed-but-uncommitted batch
    was processed (None when everything processed is committed); ``ready()`` compares its
    age with ``commit_overdue_s`` at probe time, so a loop stuck waiting on the broker is
    reported even though it cannot update anything.
    """

    def __init__(self, stale_after_s: float, commit_overdue_s: float = float("inf")) -> None:
        self.stale_after_s = stale_after_s
        self.commit_overdue_s = commit_overdue_s
        self.heartbeat = time.monotonic()
        self.model_version: str | None = None
        self.partitions: int = 0
        self.connected = False
        self.reason = "starting"
        self.broker_problem: str | None = None  # from the consumer: coordinator unreachable
        self.uncommitted_since: float | None = None
        self.held: dict[Any, str] = {}  # partition -> why its records cannot be decoded

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def live(self) -> tuple[bool, str]:
        age = time.monotonic() - self.heartbeat
        if age > self.stale_after_s:
            return False, f"loop heartbeat {age:.0f} s old (> {self.stale_after_s:.0f} s)"
        return True, f"loop heartbeat {age:.1f} s old"

    def ready(self) -> tuple[bool, str]:
        if self.model_version is None:
            return False, f"no model loaded ({self.reason})"
        if not self.connected:
            return False, f"not connected to Kafka ({self.reason})"
        if self.broker_problem is not None:
            return False, f"Kafka unreachable: {self.broker_problem}"
        since = self.uncommitted_since
        if since is not None:
            age_s = time.monotonic() - since
            if age_s > self.commit_overdue_s:
                return False, (
                    f"commit overdue: work processed {age_s:.0f} s ago is not committed "
                    f"(> {self.commit_overdue_s:.1f} s)"
                )
        if self.partitions == 0:
            return False, "no partitions assigned"
        if self.held:
            tp, why = next(iter(self.held.items()))
            name = f"{tp.topic}-{tp.partition}" if hasattr(tp, "topic") else str(tp)
            more = f" (and {len(self.held) - 1} more)" if len(self.held) > 1 else ""
            return False, f"partition {name} held: {why}{more}"
        return True, f"model {self.model_version}, {self.partitions} partitions"


class HealthServer:
    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, state: HealthState
    ) -> None:
        handler = _make_handler(registry, state)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="health-http", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _make_handler(registry: CollectorRegistry, state: HealthState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = state.live() if path == "/healthz" else state.ready()
                self._send(
                    200 if ok else 503,
                    (("ok: " if ok else "not ok: ") + why + "\n").encode(),
                    "text/plain",
                )
            else:
                self._send(404, b"not found: try /metrics, /healthz, /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds would flood the service log

    return Handler
