"""At-least-once: which input offsets may be committed, given the acknowledgements.

    processed batch -> pending (its sends in flight) -> acknowledged -> commit sent
                    -> confirmed by the broker (or failed: back into the next commit)

A batch's offsets move forward only when every alert and dead letter it produced, and
every earlier batch's, is acknowledged. Commits are asynchronous and trail the batches;
a failed one is merged into the next, only for partitions no later commit has moved
further, so offsets never go backwards. No Kafka in here: the service hands this book
its batches and its commit outcomes, and commits what it returns.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from detector.errors import DetectorError

Offsets = dict[TopicPartition, int]


class DeliveryError(DetectorError):
    """An alert or dead letter was not acknowledged; its batch must not be committed."""


@dataclass
class Pending:
    """A processed batch whose offsets wait for its sends to be acknowledged."""

    offsets: Offsets
    futures: list[Any]
    processed_at: float = field(default_factory=time.monotonic)  # for /readyz's commit age

    def done(self) -> bool:
        return all(f.is_done for f in self.futures)

    def raise_if_failed(self) -> None:
        for f in self.futures:
            if f.failed():
                raise DeliveryError(f"a send of the batch was not acknowledged: {f.exception!r}")


class OffsetBook:
    """The offsets of one Kafka session, from processed to confirmed committed."""

    def __init__(self) -> None:
        self.pending: deque[Pending] = deque()
        self._acked: Offsets = {}  # acknowledged, not yet committed
        self._acked_since: float | None = None  # when the oldest of ``_acked`` was processed
        # Async commits sent, not yet confirmed: ticket -> (offsets, oldest work in them).
        self._unconfirmed: dict[int, tuple[Offsets, float]] = {}
        self._sent_max: Offsets = {}  # highest offset handed to a commit, per partition

    def clear(self) -> None:
        """Forget everything: a new session, or partitions lost (redelivered elsewhere)."""
        self.pending.clear()
        self._acked, self._acked_since = {}, None
        self._unconfirmed = {}
        self._sent_max = {}

    def processed(self, offsets: Offsets, futures: list[Any]) -> None:
        self.pending.append(Pending(offsets, futures))

    def collect_acknowledged(self) -> None:
        """Move the leading batches whose sends are all done to acknowledged; raise
        ``DeliveryError`` if one of them failed (the session must end uncommitted)."""
        while self.pending and self.pending[0].done():
            head = self.pending.popleft()
            head.raise_if_failed()
            self._add_acked(head.offsets, head.processed_at)

    def take_acknowledged(self) -> tuple[Offsets, float] | None:
        """The acknowledged offsets to commit now and when their oldest work was done."""
        if not self._acked:
            return None
        assert self._acked_since is not None
        taken = (self._acked, self._acked_since)
        self._acked, self._acked_since = {}, None
        return taken

    def commit_sent(self, ticket: int | None, offsets: Offsets, since: float) -> None:
        """A commit of ``offsets`` went out: async (a ticket, confirmed later) or sync."""
        for tp, offset in offsets.items():
            self._sent_max[tp] = max(offset, self._sent_max.get(tp, -1))
        if ticket is not None:
            self._unconfirmed[ticket] = (offsets, since)

    def commit_answered(self, ticket: int, error: str | None) -> bool:
        """The broker answered an async commit; True if it failed and its offsets go
        back into the next commit."""
        sent = self._unconfirmed.pop(ticket, None)
        if sent is None or error is None:
            return False
        offsets, since = sent
        # Only partitions no later commit has moved further: never commit backwards.
        retry = {tp: o for tp, o in offsets.items() if o >= self._sent_max.get(tp, -1)}
        if retry:
            self._add_acked(retry, since)
        return True

    def take_everything(self) -> Offsets:
        """Everything processed, for the sync commit of a drain (shutdown, revocation):
        every send must be done (the caller flushed), or ``DeliveryError``.

        Async commits not yet answered are committed again with the rest: the same offset
        twice is harmless, one lost on the way would be redelivered.
        """
        for offsets, since in self._unconfirmed.values():
            self._add_acked(offsets, since)
        ready, self._acked, self._acked_since = self._acked, {}, None
        while self.pending:
            head = self.pending.popleft()
            if not head.done():
                raise DeliveryError("sends still unacknowledged after the flush; not committing")
            head.raise_if_failed()
            ready.update(head.offsets)
        self._unconfirmed = {}
        return ready

    def uncommitted_since(self) -> float | None:
        """When the oldest processed work not yet confirmed committed was done (/readyz)."""
        times = [since for _, since in self._unconfirmed.values()]
        if self._acked_since is not None:
            times.append(self._acked_since)
        if self.pending:
            times.append(self.pending[0].processed_at)
        return min(times) if times else None

    def _add_acked(self, offsets: Offsets, processed_at: float) -> None:
        for tp, offset in offsets.items():
            if offset > self._acked.get(tp, -1):
                self._acked[tp] = offset
        if self._acked_since is None or processed_at < self._acked_since:
            self._acked_since = processed_at
