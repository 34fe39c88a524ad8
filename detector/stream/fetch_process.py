"""The fetch process: ``ConsumerFetcher`` in a child (its service side: ``process_fetcher``).

::

    fetch process (_Child)                     service process (ProcessFetcher)
    poll -> RecordBatch  ---- batch ------>    parse, score, publish, observe
    commit(offsets)      <--- commit ------    every send of the batch acknowledged
    status, commit_result ---------------->    /readyz, lag gauge, failed commits retried
    revoked / lost: wait ---- revoked ---->    drain sends, commit ---- resume ---->

The child never commits on its own, only the offsets the service hands it after their
alerts and dead letters are acknowledged. If the service process dies, the child sees
its pipe close and exits without committing; if the child dies, the service ends the
Kafka session and starts a new one.

This module is the child's entry point (``python -m detector.stream.fetch_process``), so
it imports only the Kafka client and the settings, not the model stack.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from detector.logs import RecentRecords, keep_recent_records
from detector.settings import Settings
from detector.stream.fetcher import (
    REVOKE_POLL_S,
    ConsumerFetcher,
)
from detector.stream.memory import (
    HeapTrimmer,
    freeze_startup_objects,
    pin_malloc_mmap_threshold,
)
from detector.stream.process_fetcher import read_message, write_message

log = logging.getLogger(__name__)

# How long the child's poll waits when the topic is idle: also how late a commit or a stop
# from the service is read then. Under load polls return at once.
CHILD_POLL_TIMEOUT_MS = 100
# How often the child reports lag and broker reachability (the service reads the latest).
CHILD_STATUS_INTERVAL_S = 1.0
# The fetch process's exit code when its Kafka client wedged (``_Child.watch``).
STALLED_EXIT_CODE = 75
# kafka-python's group-coordinator lines (DEBUG included) the fetch process keeps, newest
# last, to print when the watchdog ends a wedged client: the cause of the join stalls seen
# on Apache Kafka is not known, and these say what the client last did in the join.
RECENT_COORDINATOR_LINES = 200
COORDINATOR_LOGGER = "kafka.coordinator"
# A revocation's hand-over still waiting for the service after this long is logged once,
# with the client's recent coordinator lines: a restarted service has been seen to stall
# there on Apache Kafka (issue 17), for a reason not known yet.
HAND_OVER_SLOW_S = 15.0


# -- in a child process -------------------------------------------------------------------
def keep_recent_coordinator_records(maxlen: int = RECENT_COORDINATOR_LINES) -> RecentRecords:
    return keep_recent_records(COORDINATOR_LOGGER, maxlen)


class _ServiceGone(Exception):
    """The pipe to the service broke: the service exited or was killed.

    Its own type, so that a ``ConnectionResetError`` or ``BrokenPipeError`` out of the Kafka
    client (its sockets to the brokers) is never mistaken for it: that one is reported to
    the service and logged, while this one ends the child quietly without committing."""


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
    # When the running poll started (None between polls), and whether it is inside a
    # revocation's hand-over, which waits for the service and may take long: the watchdog.
    _poll_started: float | None = None
    _handing_over: bool = False
    # Since when this member has been (re)joining its group: from the start and from the
    # end of each hand-over until the next assignment (None while it holds an assignment).
    _joining_since: float | None = None
    # kafka-python's recent coordinator records, printed when the watchdog fires.
    recent: RecentRecords | None = None

    def send(self, kind: str, payload: Any) -> None:
        try:
            with self._send_lock:
                write_message(self.to_service, kind, payload)
        except OSError as exc:
            self.service_gone = True
            raise _ServiceGone(f"sending {kind!r}: {exc}") from exc

    def receive(self) -> tuple[str, Any]:
        try:
            return read_message(self.from_service)
        except (EOFError, OSError) as exc:
            self.service_gone = True
            raise _ServiceGone(f"reading from the service: {exc!r}") from exc

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
        while not self.stopping and self._service_pipe_ready():
            self.handle(*self.receive())

    def _service_pipe_ready(self) -> bool:
        try:
            return self.from_service.poll(0)
        except (EOFError, OSError) as exc:
            self.service_gone = True
            raise _ServiceGone(f"polling the service's pipe: {exc!r}") from exc

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
        self._handing_over = True
        try:
            await self._hand_over(kind, partitions)
        finally:
            self._handing_over = False
            now = time.monotonic()
            self._joining_since = now  # the watchdog counts the join from here on
            if self._poll_started is not None:
                self._poll_started = now

    async def _hand_over(self, kind: str, partitions: list[TopicPartition]) -> None:
        assert self.fetcher is not None
        self.send(kind, partitions)
        timeout_s = self.settings.kafka.max_poll_interval_ms / 1000.0
        started = time.monotonic()
        deadline = started + timeout_s
        slow_said = False
        while True:
            now = time.monotonic()
            if now > deadline:
                log.warning("no answer from the service within %.0f s of a revocation", timeout_s)
                return  # uncommitted work is redelivered to the new owner
            if not slow_said and now - started > HAND_OVER_SLOW_S:
                slow_said = True
                self._say_slow_hand_over(kind, now - started, timeout_s)
            try:
                if not self._service_pipe_ready():
                    await self.fetcher.sleep(REVOKE_POLL_S)
                    continue
                kind, payload = self.receive()
            except _ServiceGone:
                return  # kafka-python swallows listener errors: service_gone remembers
            if kind == "resume":
                return
            if kind == "commit" and payload[1]:
                await self._commit_sync_in_listener(payload[0])
            else:
                self.handle(kind, payload)

    def _say_slow_hand_over(self, kind: str, waited_s: float, timeout_s: float) -> None:
        lines = self.recent.lines() if self.recent is not None else []
        log.warning(
            "partitions %s %.0f s ago, the service has not handed them over yet (waiting at "
            "most %.0f s, kafka.max_poll_interval_ms); the Kafka client's last %d coordinator "
            "log lines:\n%s",
            kind,
            waited_s,
            timeout_s,
            len(lines),
            "\n".join(lines),
        )

    async def _commit_sync_in_listener(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.fetcher is not None
        try:
            await self.fetcher.commit_in_listener(offsets)
        except KafkaError as exc:
            self.send("committed", f"{type(exc).__name__}: {exc}")
        else:
            self.send("committed", None)

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        self._joining_since = None  # joined (an empty assignment is a completed join too)
        if not self.service_gone:
            assert self.fetcher is not None
            self.send("group", self.fetcher.group_metadata())
            self.send("assigned", partitions)

    def stalled(self, now: float) -> tuple[float, str]:
        """How long the Kafka client has been stuck, and where (0 s: it is not).

        Two wedges of kafka-python 3.0.12 seen on Apache Kafka after a rebalance: a poll
        that never returns (waiting in ``ensure_coordinator_ready``, the IO loop idle), and
        polls that return but never rejoin the group after a revocation (the member expired,
        no new join sent). Time inside a hand-over, which waits for the service, counts as
        neither.
        """
        if self._handing_over:
            return 0.0, ""
        started, joining = self._poll_started, self._joining_since
        poll_s = 0.0 if started is None else now - started
        join_s = 0.0 if joining is None else max(0.0, now - joining)
        if poll_s >= join_s:
            return poll_s, "poll has not returned"
        return join_s, "group join has not completed"

    def watch(self, interval_s: float = 1.0) -> None:
        """End the process when the client wedges, so the service starts a new session.

        Nothing inside the client can be interrupted from here; a new process can. The
        service sees the pipe close and restarts its Kafka session with back-off; what was
        not committed is redelivered.
        """
        limit_s = self.settings.kafka.poll_stall_timeout_ms / 1000.0
        while True:
            time.sleep(interval_s)
            stalled_s, where = self.stalled(time.monotonic())
            if stalled_s > limit_s:
                log.error(
                    "the Kafka client's %s for %.0f s (kafka.poll_stall_timeout_ms = %d): "
                    "restarting the Kafka session",
                    where,
                    stalled_s,
                    self.settings.kafka.poll_stall_timeout_ms,
                )
                if self.recent is not None:
                    lines = self.recent.lines()
                    log.error(
                        "the Kafka client's last %d coordinator log lines:\n%s",
                        len(lines),
                        "\n".join(lines),
                    )
                logging.shutdown()
                os._exit(STALLED_EXIT_CODE)  # the pipe closes: the service sees the exit

    def serve(self) -> None:
        pin_malloc_mmap_threshold()  # before the first fetch buffer: see detector.stream.memory
        # The first join counts from the end of the longest bootstrap (the constructor waits
        # for the input topic's metadata): set before it, as kafka-python's IO thread may
        # complete the join before the constructor returns.
        self._joining_since = time.monotonic() + self.settings.kafka.bootstrap_timeout_ms / 1000
        self.fetcher = ConsumerFetcher(self.settings.kafka, self)
        freeze_startup_objects()  # full collections here took ~33 ms: no batch moved meanwhile
        threading.Thread(target=self.watch, name="poll-watchdog", daemon=True).start()
        trim_heap = HeapTrimmer()
        next_status = 0.0
        while True:
            self.drain_control()
            if self.stopping:
                return
            self._poll_started = time.monotonic()
            batch = self.fetcher.poll(CHILD_POLL_TIMEOUT_MS)
            self._poll_started = None
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
        kind, settings = read_message(from_service)
    except (EOFError, OSError):
        return 1
    assert kind == "settings"
    from detector.logs import setup_logging

    setup_logging(settings.service.log_format, settings.service.log_level)
    child = _Child(to_service, from_service, settings)
    child.recent = keep_recent_coordinator_records()
    try:
        child.serve()
    except _ServiceGone:
        return 0  # the service went away: stop without committing anything more
    except Exception as exc:  # reported to the service, which restarts the session
        log.exception("the fetch process failed; the service will start a new Kafka session")
        with contextlib.suppress(_ServiceGone):
            child.send("error", f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if child.fetcher is not None:
            with contextlib.suppress(Exception):
                child.fetcher.close()
    return 0


if __name__ == "__main__":
    # Run the imported module's child_main, not this __main__ copy: one copy of each
    # class, so what the child pickles is what the service loads.
    from detector.stream.fetch_process import child_main as _imported_child_main

    sys.exit(_imported_child_main(int(sys.argv[1]), int(sys.argv[2])))
