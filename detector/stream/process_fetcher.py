"""The service's side of the fetch process (``service.fetch_process``): ``ProcessFetcher``.

It starts ``python -m detector.stream.fetch_process`` (the child: ``detector.stream
.fetch_process``), sends it the settings over a pipe, and then reads batches, statuses and
rebalances from it and sends it commits, in the order of the diagram there. A revocation
reaches the service's handler inside ``poll``; the child waits in its rebalance listener
until the service answers ``resume``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import subprocess
import sys
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import IO, Any

from kafka import TopicPartition
from kafka.structs import ConsumerGroupMetadata

from detector.settings import Settings
from detector.stream.fetcher import (
    CommitResult,
    FetcherError,
    FetchStatus,
    RebalanceHandler,
    RecordBatch,
)

log = logging.getLogger(__name__)

# The batch pipe's kernel buffer: four ~230 kB batches fit, so a send is one write.
PIPE_BYTES = 1 << 20
# Waiting for the fetch process to leave its group and exit, at most.
CHILD_EXIT_TIMEOUT_S = 15.0


# Messages are (kind, payload) tuples, pickled. Child -> service: batch, revoked, lost, assigned,
# status (a FetchStatus, once a second), committed (reply to a sync commit: None or the
# error text), commit_result (an async commit's CommitResult), error. Service -> child:
# settings (first), commit ((offsets, sync, ticket)), resume (after a revocation), stop.
def write_message(conn: Connection, kind: str, payload: Any) -> None:
    conn.send_bytes(pickle.dumps((kind, payload), protocol=5))


def read_message(conn: Connection) -> tuple[str, Any]:
    message: tuple[str, Any] = pickle.loads(conn.recv_bytes())
    return message


class ProcessFetcher:
    """Runs ``ConsumerFetcher`` in ``python -m detector.stream.fetcher``, talks over pipes."""

    def __init__(self, settings: Settings, handler: RebalanceHandler) -> None:
        self.handler = handler
        self._status = FetchStatus()
        self._group = ConsumerGroupMetadata(settings.kafka.group_id)  # unjoined until assigned
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
                    "detector.stream.fetch_process",
                    str(to_child_r),
                    str(from_child_w),
                ],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stderr=_where_logs_go(),
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
        elif kind == "group":
            self._group = payload
        elif kind == "commit_result":
            self._results.append(payload)
        elif kind == "error":
            raise FetcherError(f"fetch process: {payload}")
        else:
            raise FetcherError(f"unexpected message from the fetch process: {kind!r}")

    def _send(self, kind: str, payload: Any) -> None:
        try:
            write_message(self._to_child, kind, payload)
        except OSError as exc:
            raise FetcherError(f"the fetch process is gone ({self._exit_status()})") from exc

    def _recv(self) -> tuple[str, Any]:
        try:
            return read_message(self._from_child)
        except (EOFError, OSError) as exc:
            raise FetcherError(f"the fetch process is gone ({self._exit_status()})") from exc

    def _exit_status(self) -> str:
        code = self._proc.poll()
        return "still running" if code is None else f"exit code {code}"


def _where_logs_go() -> IO[str] | None:
    """The file this process's root logger writes to, if it writes to one; else None.

    The child logs to its stderr. When our own records go to a file (the demo keeps its
    console for the live view and logs to the run's ``demo.log``), the child's go there
    too instead of through the console; otherwise it shares our stderr.
    """
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.stream is not None:
            return handler.stream
    return None
