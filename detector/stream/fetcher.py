"""Fetching: the consumer's side of the loop, in this process or in a child process.

kafka-python decodes records in pure Python, about 5 us per event: as much as parsing,
scoring and publishing together. With ``service.fetch_process`` on (the default) a child
process owns the consumer and fetches batch i+1 while the service scores batch i, so the
two halves use two cores instead of taking turns on one::

    fetch process (ConsumerFetcher)            service process (DetectorService)
    poll -> RecordBatch  ---- batches ---->    parse, score, publish, observe
    commit_async(offsets) <--- commit -----    every send of the batch acknowledged
    revoked: wait        ---- revoked ---->    drain sends, commit ---- resume ---->

At-least-once is the same in both modes: the child never commits on its own, only the
offsets the service hands it after their alerts and dead letters are acknowledged. If
the service process dies, the child sees its pipe close and exits without committing;
if the child dies, the service ends the Kafka session and starts a new one.

This module is the child's entry point (``python -m detector.stream.fetcher``), so it
imports only the Kafka client and the settings, not the model stack.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata

from detector.errors import DetectorError
from detector.settings import KafkaSettings, Settings
from detector.stream.clients import make_consumer
from detector.stream.delivery import consumer_overrides
from detector.stream.memory import (
    HeapTrimmer,
    freeze_startup_objects,
    pin_malloc_mmap_threshold,
)

log = logging.getLogger(__name__)

# How long the child's poll waits when the topic is idle: also how late a commit or a stop
# from the service is read then. Under load polls return at once.
CHILD_POLL_TIMEOUT_MS = 100
# How often the child reports consumer lag (the service's gauge reads the latest).
CHILD_LAG_INTERVAL_S = 1.0
# The batch pipe's kernel buffer: four ~230 kB batches fit, so a send is one write.
PIPE_BYTES = 1 << 20
# Waiting for the fetch process to leave its group and exit, at most.
CHILD_EXIT_TIMEOUT_S = 15.0


class FetcherError(DetectorError):
    """The fetch process failed or went away; the Kafka session must be restarted."""


@dataclass(slots=True)
class RecordBatch:
    """One poll's records as flat columns (cheap to pickle), in poll order.

    ``next_offsets`` holds, per partition, the offset to commit once the whole batch is
    handled: the last record's offset + 1.
    """

    topics: list[str]
    partitions: list[int]
    offsets: list[int]
    timestamps_ms: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    next_offsets: dict[TopicPartition, int]
    fetch_seconds: float = 0.0  # time the poll took where the consumer runs

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def from_poll(
        cls, polled: dict[TopicPartition, list[Any]], fetch_seconds: float = 0.0
    ) -> RecordBatch | None:
        if not polled:
            return None
        batch = cls([], [], [], [], [], [], {}, fetch_seconds)
        for tp, records in polled.items():
            if not records:
                continue
            batch.topics += [tp.topic] * len(records)
            batch.partitions += [tp.partition] * len(records)
            batch.offsets += [r.offset for r in records]
            batch.timestamps_ms += [r.timestamp for r in records]
            batch.keys += [r.key for r in records]
            batch.values += [r.value for r in records]
            batch.next_offsets[tp] = records[-1].offset + 1  # records arrive in offset order
        return batch if batch.values else None


class RebalanceHandler(Protocol):
    """What the service does when partitions move (see ``DetectorService``)."""

    def on_revoked(self, partitions: list[TopicPartition]) -> None: ...

    def on_assigned(self, partitions: list[TopicPartition]) -> None: ...


class Fetcher(Protocol):
    def poll(self, timeout_ms: int) -> RecordBatch | None: ...

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> None: ...

    def lag(self) -> dict[TopicPartition, int]: ...

    def group_metadata(self) -> ConsumerGroupMetadata:
        """The consumer's group membership, for offsets sent in a transaction (KIP-447)."""
        ...

    def close(self) -> None: ...


def open_fetcher(settings: Settings, handler: RebalanceHandler) -> Fetcher:
    """The fetcher ``service.fetch_process`` asks for, subscribed to the input topic."""
    if settings.service.fetch_process:
        return ProcessFetcher(settings, handler)
    return ConsumerFetcher(settings.kafka, handler)


# -- in this process ----------------------------------------------------------------------
class _Listener(ConsumerRebalanceListener):
    def __init__(self, handler: RebalanceHandler) -> None:
        self.handler = handler

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.handler.on_revoked(sorted(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.handler.on_assigned(sorted(assigned))


class ConsumerFetcher:
    """The Kafka consumer itself: used in-process, and by the fetch process."""

    def __init__(self, cfg: KafkaSettings, handler: RebalanceHandler) -> None:
        self.cfg = cfg
        self.consumer: KafkaConsumer = make_consumer(cfg, **consumer_overrides(cfg))
        try:
            self.consumer.subscribe([cfg.input_topic], listener=_Listener(handler))
        except Exception:
            self.consumer.close(autocommit=False)
            raise

    def poll(self, timeout_ms: int) -> RecordBatch | None:
        started = time.perf_counter()
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.cfg.max_poll_records)
        return RecordBatch.from_poll(polled, time.perf_counter() - started)

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> None:
        meta = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        if sync:
            self.consumer.commit(meta)
        else:
            self.consumer.commit_async(meta, callback=_on_commit)

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: high watermark - position, from cached fetch responses.

        ``end_offsets()`` would be a round trip per call (and is unreliable on Tansu).
        """
        out: dict[TopicPartition, int] = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=0)
            except (KafkaError, TypeError):
                continue
            if position is not None:
                out[tp] = max(0, high - position)
        return out

    def group_metadata(self) -> ConsumerGroupMetadata:
        return self.consumer.group_metadata()

    def close(self) -> None:
        # Leaves the group: the partitions move to another replica at once.
        self.consumer.close(autocommit=False)


def _on_commit(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        # A lost async commit only means redelivery after a crash; the next one covers it.
        log.warning("offset commit failed: %s", response)


# -- in a child process -------------------------------------------------------------------
# Messages are (kind, payload) tuples, pickled. Child -> service: batch, revoked, group (the
# consumer's group metadata, before each assigned), assigned, lag, committed (reply to a
# sync commit: None or the error text), error. Service -> child:
# settings (first), commit ((offsets, sync)), resume (after a revocation), stop.
def _write(conn: Connection, kind: str, payload: Any) -> None:
    conn.send_bytes(pickle.dumps((kind, payload), protocol=5))


def _read(conn: Connection) -> tuple[str, Any]:
    message: tuple[str, Any] = pickle.loads(conn.recv_bytes())
    return message


class ProcessFetcher:
    """Runs ``ConsumerFetcher`` in ``python -m detector.stream.fetcher``, talks over pipes."""

    def __init__(self, settings: Settings, handler: RebalanceHandler) -> None:
        self.handler = handler
        self._lag: dict[TopicPartition, int] = {}
        self._group = ConsumerGroupMetadata(settings.kafka.group_id)  # unjoined until assigned
        self._early: deque[tuple[str, Any]] = deque()  # read while awaiting a commit reply
        self._commit_timeout_s = settings.kafka.request_timeout_ms / 1000.0 + 5.0
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        with contextlib.suppress(OSError):  # a smaller default buffer only costs speed
            fcntl.fcntl(from_child_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "detector.stream.fetcher",
                    str(to_child_r),
                    str(from_child_w),
                ],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            for fd in (to_child_r, to_child_w, from_child_r, from_child_w):
                os.close(fd)
            raise
        os.close(to_child_r)  # the child's ends: closed here so EOF shows when it exits
        os.close(from_child_w)
        self._to_child = Connection(to_child_w, readable=False)
        self._from_child = Connection(from_child_r, writable=False)
        # Settings travel over the pipe, not argv or the environment: they hold secrets.
        self._send("settings", settings)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self, timeout_ms: int) -> RecordBatch | None:
        while self._early:  # what arrived while a sync commit waited, in arrival order
            kind, payload = self._early.popleft()
            if kind == "batch":
                early: RecordBatch = payload
                return early
            self._handle(kind, payload)
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            remaining = deadline - time.monotonic()
            if not self._from_child.poll(max(0.0, remaining)):
                return None
            kind, payload = self._recv()
            if kind == "batch":
                batch: RecordBatch = payload
                return batch
            self._handle(kind, payload)
            if remaining <= 0:
                return None

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> None:
        self._send("commit", (offsets, sync))
        if not sync:
            return
        deadline = time.monotonic() + self._commit_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._from_child.poll(remaining):
                raise FetcherError(
                    f"the fetch process did not confirm the commit within "
                    f"{self._commit_timeout_s:.0f} s"
                )
            kind, payload = self._recv()
            if kind == "committed":
                if payload is not None:
                    raise FetcherError(f"offset commit failed: {payload}")
                return
            if kind == "lag":
                self._lag = payload
            else:
                # A batch, or a revocation that came after batches not yet handled:
                # keep the order, so a revocation commits everything before it.
                self._early.append((kind, payload))

    def lag(self) -> dict[TopicPartition, int]:
        return self._lag

    def group_metadata(self) -> ConsumerGroupMetadata:
        # The generation changes only at an assignment, and the child reports it just before.
        return self._group

    def close(self) -> None:
        with contextlib.suppress(FetcherError):
            self._send("stop", None)
        # The child may be blocked writing a batch into a full pipe: keep reading (and
        # dropping: nothing unread was committed, so it is redelivered) until it exits.
        deadline = time.monotonic() + CHILD_EXIT_TIMEOUT_S
        try:
            while self._proc.poll() is None and time.monotonic() < deadline:
                try:
                    if self._from_child.poll(0.05):
                        self._from_child.recv_bytes()
                except (EOFError, OSError):
                    break  # the child closed its end: it is exiting
            try:
                self._proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("fetch process %d did not exit; killing it", self._proc.pid)
                self._proc.kill()
                self._proc.wait()
        finally:
            self._early.clear()
            self._to_child.close()
            self._from_child.close()

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "revoked":
            try:
                self.handler.on_revoked(payload)
            finally:
                self._send("resume", None)  # the child waits in its rebalance callback
        elif kind == "assigned":
            self.handler.on_assigned(payload)
        elif kind == "lag":
            self._lag = payload
        elif kind == "group":
            self._group = payload
        elif kind == "error":
            raise FetcherError(f"fetch process: {payload}")
        else:
            raise FetcherError(f"unexpected message from the fetch process: {kind!r}")

    def _send(self, kind: str, payload: Any) -> None:
        try:
            _write(self._to_child, kind, payload)
        except OSError as exc:
            raise FetcherError(f"the fetch process is gone ({self._exit_status()})") from exc

    def _recv(self) -> tuple[str, Any]:
        try:
            return _read(self._from_child)
        except (EOFError, OSError) as exc:
            raise FetcherError(f"the fetch process is gone ({self._exit_status()})") from exc

    def _exit_status(self) -> str:
        code = self._proc.poll()
        return "still running" if code is None else f"exit code {code}"


@dataclass
class _Child:
    """The fetch process: relays batches out and commits in, nothing else."""

    to_service: Connection
    from_service: Connection
    settings: Settings
    fetcher: ConsumerFetcher | None = None
    stopping: bool = False
    service_gone: bool = False

    def send(self, kind: str, payload: Any) -> None:
        try:
            _write(self.to_service, kind, payload)
        except OSError:
            self.service_gone = True
            raise

    def handle(self, kind: str, payload: Any) -> None:
        if kind == "commit":
            offsets, sync = payload
            assert self.fetcher is not None
            if not sync:
                self.fetcher.commit(offsets, sync=False)
                return
            try:
                self.fetcher.commit(offsets, sync=True)
            except KafkaError as exc:
                self.send("committed", f"{type(exc).__name__}: {exc}")
            else:
                self.send("committed", None)
        elif kind == "stop":
            self.stopping = True

    def drain_control(self) -> None:
        while not self.stopping and self.from_service.poll(0):
            self.handle(*_read(self.from_service))

    # RebalanceHandler: called inside consumer.poll()
    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        # The service finishes every batch sent before this message, waits for their
        # acknowledgements and sends the commit; only then may the partitions move.
        if self.service_gone or self.stopping:
            # Nothing more to commit: the service committed its finished work before
            # "stop", or it is gone; the next owner re-reads anything uncommitted.
            return
        self.send("revoked", partitions)
        timeout_s = self.settings.kafka.max_poll_interval_ms / 1000.0
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.from_service.poll(remaining):
                log.warning("no answer from the service within %.0f s of a revocation", timeout_s)
                return  # uncommitted work is redelivered to the new owner
            try:
                kind, payload = _read(self.from_service)
            except (EOFError, OSError):
                self.service_gone = True  # kafka-python swallows listener errors: remember
                return
            if kind == "resume":
                return
            self.handle(kind, payload)

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        if not self.service_gone:
            assert self.fetcher is not None
            self.send("group", self.fetcher.group_metadata())
            self.send("assigned", partitions)

    def serve(self) -> None:
        pin_malloc_mmap_threshold()  # before the first fetch buffer: see detector.stream.memory
        self.fetcher = ConsumerFetcher(self.settings.kafka, self)
        freeze_startup_objects()  # full collections here took ~33 ms: no batch moved meanwhile
        trim_heap = HeapTrimmer()
        next_lag = 0.0
        while True:
            self.drain_control()
            if self.stopping:
                return
            batch = self.fetcher.poll(CHILD_POLL_TIMEOUT_MS)
            if batch is not None:
                self.send("batch", batch)
            now = time.monotonic()
            if now >= next_lag:
                self.send("lag", self.fetcher.lag())
                next_lag = now + CHILD_LAG_INTERVAL_S
            trim_heap()


def child_main(read_fd: int, write_fd: int) -> int:
    # Ctrl-C reaches the whole process group; the service decides when fetching stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from_service = Connection(read_fd, writable=False)
    to_service = Connection(write_fd, readable=False)
    try:
        kind, settings = _read(from_service)
    except (EOFError, OSError):
        return 1
    assert kind == "settings"
    from detector.logs import setup_logging

    setup_logging(settings.service.log_format, settings.service.log_level)
    child = _Child(to_service, from_service, settings)
    try:
        child.serve()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        child.service_gone = True
        return 0  # the service went away: stop without committing anything more
    except Exception as exc:  # reported to the service, which restarts the session
        with contextlib.suppress(OSError):
            child.send("error", f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if child.fetcher is not None:
            with contextlib.suppress(Exception):
                child.fetcher.close()
    return 0


if __name__ == "__main__":
    # Run the imported module's child_main, not this __main__ copy: batches must
    # pickle as detector.stream.fetcher.RecordBatch for the service to load them.
    from detector.stream.fetcher import child_main as _imported_child_main

    sys.exit(_imported_child_main(int(sys.argv[1]), int(sys.argv[2])))
