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
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CorruptRecordError, KafkaError, UnsupportedCodecError
from kafka.structs import OffsetAndMetadata

from detector.errors import DetectorError
from detector.settings import KafkaSettings, Settings
from detector.stream.clients import make_consumer
from detector.stream.memory import (
    HeapTrimmer,
    freeze_startup_objects,
    pin_malloc_mmap_threshold,
)

log = logging.getLogger(__name__)

# How long the child's poll waits when the topic is idle: also how late a commit or a stop
# from the service is read then. Under load polls return at once.
CHILD_POLL_TIMEOUT_MS = 100
# How often the child reports lag and broker reachability (the service reads the latest).
CHILD_STATUS_INTERVAL_S = 1.0
# The batch pipe's kernel buffer: four ~230 kB batches fit, so a send is one write.
PIPE_BYTES = 1 << 20
# Waiting for the fetch process to leave its group and exit, at most.
CHILD_EXIT_TIMEOUT_S = 15.0
# A partition whose records cannot be decoded is paused this long between attempts: a
# retry per poll would spin on the same bytes, and a restart of the fetch process would
# only meet them again.
UNDECODABLE_RETRY_S = 30.0
# While the service drains and commits during a revocation, the rebalance listener looks
# at the pipe this often; in between, kafka-python's IO loop keeps heartbeating.
REVOKE_POLL_S = 0.005


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


@dataclass(slots=True)
class FetchStatus:
    """What the consumer knows about its side, for /readyz and the lag gauge.

    ``broker_problem`` is None while the group coordinator is known and answered within
    the session timeout; ``held`` names the partitions paused on undecodable records.
    """

    lag: dict[TopicPartition, int] = field(default_factory=dict)
    broker_problem: str | None = "not connected yet"
    held: dict[TopicPartition, str] = field(default_factory=dict)


# The outcome of one asynchronous commit: its ticket (from ``Fetcher.commit``) and None
# when the broker confirmed it, else the error text.
CommitResult = tuple[int, str | None]


class RebalanceHandler(Protocol):
    """What the service does when partitions move (see ``DetectorService``)."""

    def on_revoked(self, partitions: list[TopicPartition]) -> None: ...

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        """The group dropped this member (session expired, broker replaced): the
        partitions are no longer ours, so nothing may be committed for them."""
        ...

    def on_assigned(self, partitions: list[TopicPartition]) -> None: ...


class Fetcher(Protocol):
    def poll(self, timeout_ms: int) -> RecordBatch | None: ...

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> int:
        """Commit ``offsets``; sync raises on failure, async returns a ticket whose
        outcome ``commit_results()`` reports later."""
        ...

    def commit_results(self) -> list[CommitResult]: ...

    def status(self) -> FetchStatus: ...

    def close(self) -> None: ...


def open_fetcher(settings: Settings, handler: RebalanceHandler) -> Fetcher:
    """The fetcher ``service.fetch_process`` asks for, subscribed to the input topic."""
    if settings.service.fetch_process:
        return ProcessFetcher(settings, handler)
    return ConsumerFetcher(settings.kafka, handler)


# -- in this process ----------------------------------------------------------------------
class _Listener(AsyncConsumerRebalanceListener):
    """kafka-python 3 calls rebalance listeners on its IO thread, where a blocking call
    (``consumer.commit()``) fails with "Cannot block on net.run() from the IO thread".
    So the listener is async: a sync commit asked for during a revocation is awaited here,
    and a handler with ``hand_over_async`` (the fetch process) awaits its own work while
    the IO loop keeps heartbeating."""

    def __init__(self, fetcher: ConsumerFetcher, handler: RebalanceHandler) -> None:
        self.fetcher = fetcher
        self.handler = handler

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = sorted(revoked)
        hook: Callable[[str, list[TopicPartition]], Awaitable[None]] | None = getattr(
            self.handler, "hand_over_async", None
        )
        if hook is not None:
            await hook("revoked", partitions)
            return
        self.fetcher._deferred = {}
        try:
            self.handler.on_revoked(partitions)  # its sync commit lands in _deferred
        finally:
            deferred, self.fetcher._deferred = self.fetcher._deferred, None
        if deferred:
            await self.fetcher.commit_in_listener(deferred)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.fetcher.held.clear()  # pauses do not survive a rebalance
        self.handler.on_assigned(sorted(assigned))

    async def on_partitions_lost(self, lost: Any) -> None:
        # Evicted (session expired, broker replaced): committing would be refused with
        # CommitFailedError, so the handler drops its uncommitted work instead, and the
        # consumer rejoins in the same session. Ending the session here instead left
        # Tansu's group waiting on a leader that had left mid-sync.
        partitions = sorted(lost)
        hook: Callable[[str, list[TopicPartition]], Awaitable[None]] | None = getattr(
            self.handler, "hand_over_async", None
        )
        if hook is not None:
            await hook("lost", partitions)
            return
        self.handler.on_lost(partitions)


class ConsumerFetcher:
    """The Kafka consumer itself: used in-process, and by the fetch process."""

    def __init__(self, cfg: KafkaSettings, handler: RebalanceHandler) -> None:
        self.cfg = cfg
        self.consumer: KafkaConsumer = make_consumer(cfg)
        self.held: dict[TopicPartition, str] = {}  # paused on undecodable records: why
        self._held_until: dict[TopicPartition, float] = {}
        self._deferred: dict[TopicPartition, int] | None = None  # sync commit inside a revocation
        self._tickets = 0
        self._results: deque[CommitResult] = deque()  # appended on kafka-python's IO thread
        self._commit_failing = False
        try:
            self.consumer.subscribe([cfg.input_topic], listener=_Listener(self, handler))
        except Exception:
            self.consumer.close(autocommit=False)
            raise

    def poll(self, timeout_ms: int) -> RecordBatch | None:
        self._resume_held()
        started = time.perf_counter()
        try:
            polled = self.consumer.poll(
                timeout_ms=timeout_ms, max_records=self.cfg.max_poll_records
            )
        except (UnsupportedCodecError, CorruptRecordError) as exc:
            self._hold_undecodable(exc)
            return None
        except KafkaError:
            raise  # the session's business: broker, group, authorization
        except Exception as exc:  # a codec library's own error (lz4, zstd, snappy)
            if not self._hold_undecodable(exc):
                raise
            return None
        if self.held:
            for tp in polled:
                if self.held.pop(tp, None) is not None:
                    log.info(
                        "%s-%d: records decode again; partition resumed", tp.topic, tp.partition
                    )
        return RecordBatch.from_poll(polled, time.perf_counter() - started)

    def _hold_undecodable(self, exc: Exception) -> bool:
        """Pause the partition whose records failed to decode; False if none is known.

        The records are neither skipped nor dead-lettered: their bytes cannot be read, so
        there is nothing to publish, and skipping would lose them silently. The partition
        stays at that offset (retried every ``UNDECODABLE_RETRY_S``; /readyz says which)
        while the others keep flowing, and the fetch process is not restarted for it.
        """
        # kafka-python keeps the failing partition's records as the next in line; this is
        # the only place that names the partition of an UnsupportedCodecError.
        part = getattr(getattr(self.consumer, "_fetcher", None), "_next_partition_records", None)
        tp = getattr(part, "topic_partition", None)
        if not isinstance(tp, TopicPartition):
            return False
        offset = getattr(part, "fetch_offset", None)
        why = f"records from offset {offset} cannot be decoded: {type(exc).__name__}: {exc}"
        if tp not in self.held:
            log.error(
                "%s-%d: %s; partition paused, retried every %.0f s (install the codec "
                "library if one is missing)",
                tp.topic,
                tp.partition,
                why,
                UNDECODABLE_RETRY_S,
            )
        self.held[tp] = why
        self._held_until[tp] = time.monotonic() + UNDECODABLE_RETRY_S
        with contextlib.suppress(Exception):
            self.consumer._fetcher._next_partition_records = None  # drop the broken iterator
        with contextlib.suppress(KafkaError, AssertionError):
            self.consumer.pause(tp)
        return True

    def _resume_held(self) -> None:
        if not self._held_until:
            return
        now = time.monotonic()
        due = [tp for tp, until in self._held_until.items() if until <= now]
        for tp in due:
            del self._held_until[tp]  # stays in ``held`` until records of it decode again
            with contextlib.suppress(KafkaError, AssertionError):
                self.consumer.resume(tp)

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> int:
        meta = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        self._tickets += 1
        ticket = self._tickets
        if sync and self._deferred is not None:
            # Inside a revocation, on the IO thread: the listener awaits it when the
            # handler returns, before the partitions move.
            self._deferred.update(offsets)
        elif sync:
            self.consumer.commit(meta)
        else:
            self.consumer.commit_async(meta, callback=self._on_commit(ticket))
        return ticket

    def _on_commit(self, ticket: int) -> Callable[[Any, Any], None]:
        def done(offsets: Any, response: Any) -> None:
            if isinstance(response, Exception):
                # Reported, not retried here: the service merges the offsets back into
                # its next commit (a lost commit alone would only mean redelivery).
                # One warning per run of failures: the retries say the same.
                level = logging.DEBUG if self._commit_failing else logging.WARNING
                log.log(level, "offset commit failed: %s (retried with the next)", response)
                self._commit_failing = True
                self._results.append((ticket, f"{type(response).__name__}: {response}"))
            else:
                if self._commit_failing:
                    log.info("offset commits succeed again")
                self._commit_failing = False
                self._results.append((ticket, None))

        return done

    def commit_results(self) -> list[CommitResult]:
        out: list[CommitResult] = []
        while self._results:
            out.append(self._results.popleft())
        return out

    async def commit_in_listener(self, offsets: dict[TopicPartition, int]) -> None:
        """A synchronous commit from inside a rebalance listener (on the IO thread)."""
        meta = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        coordinator = self.consumer._coordinator
        await coordinator._commit_offsets_sync_async(meta, self.cfg.request_timeout_ms)

    async def sleep(self, seconds: float) -> None:
        """Yield kafka-python's IO loop (heartbeats, fetches) from inside a listener."""
        await self.consumer._net.sleep(seconds)

    def status(self) -> FetchStatus:
        return FetchStatus(self.lag(), self.broker_problem(), dict(self.held))

    def broker_problem(self) -> str | None:
        """None while the group coordinator is known and has answered within the session
        timeout; else what is wrong. Reads kafka-python's state, sends nothing."""
        coordinator = getattr(self.consumer, "_coordinator", None)
        if coordinator is None:
            return None
        if coordinator.coordinator_id is None:
            return "no group coordinator reachable"
        heartbeat = coordinator.heartbeat
        if coordinator.stable() and heartbeat.session_timeout_expired():
            age_s = time.monotonic() - max(heartbeat.last_receive, heartbeat.last_reset)
            return f"no heartbeat answer from the group coordinator for {age_s:.0f} s"
        return None

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

    def close(self) -> None:
        # Leaves the group: the partitions move to another replica at once.
        self.consumer.close(autocommit=False)


# -- in a child process -------------------------------------------------------------------
# Messages are (kind, payload) tuples, pickled. Child -> service: batch, revoked, lost, assigned,
# status (a FetchStatus, once a second), committed (reply to a sync commit: None or the
# error text), commit_result (an async commit's CommitResult), error. Service -> child:
# settings (first), commit ((offsets, sync, ticket)), resume (after a revocation), stop.
def _write(conn: Connection, kind: str, payload: Any) -> None:
    conn.send_bytes(pickle.dumps((kind, payload), protocol=5))


def _read(conn: Connection) -> tuple[str, Any]:
    message: tuple[str, Any] = pickle.loads(conn.recv_bytes())
    return message


class ProcessFetcher:
    """Runs ``ConsumerFetcher`` in ``python -m detector.stream.fetcher``, talks over pipes."""

    def __init__(self, settings: Settings, handler: RebalanceHandler) -> None:
        self.handler = handler
        self._status = FetchStatus()
        self._results: list[CommitResult] = []
        self._tickets = 0
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

    def commit(self, offsets: dict[TopicPartition, int], sync: bool) -> int:
        self._tickets += 1
        ticket = self._tickets
        self._send("commit", (offsets, sync, ticket))
        if not sync:
            return ticket
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
                return ticket
            if kind in ("status", "commit_result"):
                self._handle(kind, payload)
            else:
                # A batch, or a revocation that came after batches not yet handled:
                # keep the order, so a revocation commits everything before it.
                self._early.append((kind, payload))

    def commit_results(self) -> list[CommitResult]:
        out, self._results = self._results, []
        return out

    def status(self) -> FetchStatus:
        return self._status

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
        if kind in ("revoked", "lost"):
            try:
                if kind == "revoked":
                    self.handler.on_revoked(payload)
                else:
                    self.handler.on_lost(payload)
            finally:
                self._send("resume", None)  # the child waits in its rebalance callback
        elif kind == "assigned":
            self.handler.on_assigned(payload)
        elif kind == "status":
            self._status = payload
        elif kind == "commit_result":
            self._results.append(payload)
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
    # Sends come from the main thread and from rebalance listeners on kafka-python's IO
    # thread; one pickled message must never interleave with another in the pipe.
    _send_lock: threading.Lock = field(default_factory=threading.Lock)
    # Tickets of the service's async commits, by the fetcher's own tickets.
    _tickets: dict[int, int] = field(default_factory=dict)

    def send(self, kind: str, payload: Any) -> None:
        try:
            with self._send_lock:
                _write(self.to_service, kind, payload)
        except OSError:
            self.service_gone = True
            raise

    def handle(self, kind: str, payload: Any) -> None:
        """A message from the service, outside a revocation (sync commits block here)."""
        if kind == "commit":
            offsets, sync, ticket = payload
            assert self.fetcher is not None
            if not sync:
                self._tickets[self.fetcher.commit(offsets, sync=False)] = ticket
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

    def relay_commit_results(self) -> None:
        assert self.fetcher is not None
        for own, error in self.fetcher.commit_results():
            ticket = self._tickets.pop(own, None)
            if ticket is not None:
                self.send("commit_result", (ticket, error))

    # RebalanceHandler
    def on_revoked(self, partitions: list[TopicPartition]) -> None:
        raise AssertionError("the fetch process hands partitions over in hand_over_async")

    def on_lost(self, partitions: list[TopicPartition]) -> None:
        raise AssertionError("the fetch process hands partitions over in hand_over_async")

    async def hand_over_async(self, kind: str, partitions: list[TopicPartition]) -> None:
        """Called by kafka-python on its IO thread when partitions are revoked or lost.

        The service finishes every batch sent before this message, waits for their
        acknowledgements and sends the commit; only then may the partitions move. The
        pipe is looked at every few ms and the IO loop runs in between: a blocking read
        here would stop heartbeats, and a blocking commit raises on this thread.
        """
        if self.service_gone or self.stopping:
            # Nothing more to commit: the service committed its finished work before
            # "stop", or it is gone; the next owner re-reads anything uncommitted.
            return
        assert self.fetcher is not None
        self.send(kind, partitions)
        timeout_s = self.settings.kafka.max_poll_interval_ms / 1000.0
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                log.warning("no answer from the service within %.0f s of a revocation", timeout_s)
                return  # uncommitted work is redelivered to the new owner
            try:
                if not self.from_service.poll(0):
                    await self.fetcher.sleep(REVOKE_POLL_S)
                    continue
                kind, payload = _read(self.from_service)
            except (EOFError, OSError):
                self.service_gone = True  # kafka-python swallows listener errors: remember
                return
            if kind == "resume":
                return
            if kind == "commit" and payload[1]:
                await self._commit_sync_in_listener(payload[0])
            else:
                self.handle(kind, payload)

    async def _commit_sync_in_listener(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.fetcher is not None
        try:
            await self.fetcher.commit_in_listener(offsets)
        except KafkaError as exc:
            self.send("committed", f"{type(exc).__name__}: {exc}")
        else:
            self.send("committed", None)

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        if not self.service_gone:
            self.send("assigned", partitions)

    def serve(self) -> None:
        pin_malloc_mmap_threshold()  # before the first fetch buffer: see detector.stream.memory
        self.fetcher = ConsumerFetcher(self.settings.kafka, self)
        freeze_startup_objects()  # full collections here took ~33 ms: no batch moved meanwhile
        trim_heap = HeapTrimmer()
        next_status = 0.0
        while True:
            self.drain_control()
            if self.stopping:
                return
            batch = self.fetcher.poll(CHILD_POLL_TIMEOUT_MS)
            if batch is not None:
                self.send("batch", batch)
            self.relay_commit_results()
            now = time.monotonic()
            if now >= next_status:
                self.send("status", self.fetcher.status())
                next_status = now + CHILD_STATUS_INTERVAL_S
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
