"""Delivery: what may be committed, and how, under ``kafka.delivery = "exactly_once"``.

The default, ``at_least_once``, lives in ``detector.stream.service``: input offsets are
committed by the consumer once every alert and dead letter of their batch is acknowledged;
after a crash the tail is processed again and repeats carry the same ``alert_id``.

``exactly_once`` makes each batch's alerts, dead letters and input offsets one Kafka
transaction (KIP-98), so a consumer of the alerts topic with
``isolation_level="read_committed"`` sees every alert once, across crashes and rebalances::

    begin -> send alerts, dead letters (batch 1..k) -> flush -> all acknowledged?
          -> send_offsets_to_transaction(offsets of 1..k, group metadata) -> commit -> begin

A transaction holds every batch processed since the last one (at most
``kafka.commit_interval_ms`` apart, like the at-least-once commits) and always whole
batches: the offsets inside are exactly those of the batches whose sends it holds. Any
failure before the commit aborts it; the session ends and the next one resumes from the
committed offsets, so the aborted batches are processed again and their alerts appear once.
Every send's future is checked after the flush, before the offsets join: kafka-python
(3.0.12) fails a batch whose retriable error ran out of time, or that was in flight at an
epoch bump, without making the transaction abortable, so ``commit_transaction`` alone
would commit the offsets of an alert that was never written.

Fencing zombies (a replica that paused, lost its partitions and wakes up):
- The group's generation (KIP-447, Kafka 2.5+). The offsets carry the consumer's group
  metadata (member id, generation); the group coordinator refuses them from a member whose
  generation is stale, which aborts the zombie's transaction. A new owner reads its start
  offsets with ``require_stable`` (kafka-python sends it under ``read_committed``): while
  another transaction holds offsets for its partitions, the broker makes it wait, so it never
  starts from an offset a zombie is about to move. With this, one transactional id per
  replica is enough; the older scheme, one per input partition (one producer per partition,
  batches split by partition), is what brokers before 2.5 needed and costs a producer,
  its connections and a commit per partition.
- The transactional id, one per replica, stable across its restarts
  (``kafka.transactional_id``, default ``<group_id>-<hostname>``). ``init_transactions``
  aborts whatever the previous process under that id left open and bumps the producer
  epoch, so the old process, if still alive, is fenced (``ProducerFencedError``). A replica
  that dies and does not come back under its id leaves its transaction open until the
  broker aborts it after ``kafka.transaction_timeout_ms``; until then its partitions' new
  owner waits (see ``require_stable``) and read_committed readers of the alerts stop at it.

The fetcher: offsets of a transaction are sent by the producer, never committed by the
consumer. The consumer reads ``read_committed`` (input records of aborted transactions
are skipped, and the ``require_stable`` above) and still starts from the committed
position after a rebalance. Both fetchers work: the fetch process reports its consumer's
group metadata at every assignment, and batches of an older generation never cross a
revocation, which commits the transaction before the partitions move.

Samples and drift events stay outside the transaction, on a second, plain idempotent
producer (``advisory``): they are statistics whose readers (the retrainer, dashboards)
are unharmed by a repeated sample; drift events are raised on idle turns, tied to no
offsets; and keeping them out leaves fewer partitions per transaction (one commit marker
each) and no wait for them before an alert becomes visible.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, MutableSequence
from typing import Any, Protocol, get_args

from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError, ProducerFencedError
from kafka.structs import ConsumerGroupMetadata, OffsetAndMetadata

from detector.settings import CrashPoint, KafkaSettings
from detector.stream.clients import make_producer

log = logging.getLogger(__name__)

# Where ``kafka.test_crash_point`` can kill the process, in transaction order: sends maybe
# in flight; all acknowledged; offsets in the transaction; committed, next not begun.
CRASH_POINTS: tuple[CrashPoint, ...] = get_args(CrashPoint)


class Batch(Protocol):
    """A processed batch waiting for its commit (``detector.stream.service.Pending``)."""

    offsets: dict[TopicPartition, int]

    def raise_if_failed(self) -> None: ...


def exactly_once(cfg: KafkaSettings) -> bool:
    return cfg.delivery == "exactly_once"


def transactional_id(cfg: KafkaSettings) -> str:
    """This replica's transactional id: the setting, or ``<group_id>-<hostname>``."""
    return cfg.transactional_id or f"{cfg.group_id}-{socket.gethostname()}"


def consumer_overrides(cfg: KafkaSettings) -> dict[str, Any]:
    """What the input consumer needs for the delivery mode (nothing for at-least-once)."""
    if not exactly_once(cfg):
        return {}
    # Skips aborted input records and, for start offsets, waits out open transactions.
    return {"isolation_level": "read_committed"}


class Transactions:
    """The exactly-once producer pair and the transaction always open between commits."""

    def __init__(
        self, cfg: KafkaSettings, make: Callable[..., KafkaProducer] = make_producer
    ) -> None:
        self.cfg = cfg
        self.transactional_id = transactional_id(cfg)
        self.producer: KafkaProducer = make(
            cfg,
            transactional_id=self.transactional_id,
            transaction_timeout_ms=cfg.transaction_timeout_ms,
        )
        self.advisory: KafkaProducer | None = None
        try:
            # Aborts what a predecessor under this id left open, fences it if it lives on.
            self.producer.init_transactions()
            self.producer.begin_transaction()
            self.advisory = make(cfg, client_id=f"{cfg.client_id}-advisory")
        except BaseException:
            self.close(0.0)
            raise
        self.committed = 0  # transactions committed by this object
        self._next_commit = 0.0
        log.info("exactly-once delivery: transactional id %s", self.transactional_id)

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self._next_commit

    def commit(self, pending: MutableSequence[Any], group: ConsumerGroupMetadata) -> bool:
        """Commit every batch in ``pending`` (their sends and offsets) as one transaction.

        Empties ``pending`` and opens the next transaction; returns False when there was
        nothing to commit. On any failure the transaction is aborted and the error raised:
        none of the batches counts as processed.
        """
        batches: list[Batch] = list(pending)
        if not batches:
            return False
        try:
            self._crash_if("in_transaction")
            self.producer.flush(timeout=self.cfg.request_timeout_ms / 1000.0)
            for batch in batches:  # a send that failed must not commit its batch's offsets
                batch.raise_if_failed()
            self._crash_if("before_offsets")
            self.producer.send_offsets_to_transaction(_offsets(batches), group)
            self._crash_if("before_commit")
            self.producer.commit_transaction()
        except ProducerFencedError:
            log.error(
                "transactional id %s is in use by a newer producer: this replica is fenced "
                "(if two live replicas share the id, give each its own kafka.transactional_id)",
                self.transactional_id,
            )
            raise
        except BaseException:
            self.abort()
            raise
        self.committed += 1
        self._crash_if("after_commit")
        pending.clear()
        self.producer.begin_transaction()
        self._next_commit = time.monotonic() + self.cfg.commit_interval_ms / 1000.0
        return True

    def abort(self) -> None:
        """Abort the open transaction (best effort: a fenced producer cannot)."""
        try:
            self.producer.abort_transaction()
        except KafkaError as exc:
            log.warning("aborting the transaction failed (%s); the broker aborts it", exc)
        else:
            log.warning("transaction aborted: its batches will be processed again")

    def close(self, timeout_s: float) -> None:
        """Close both producers; an uncommitted transaction is left to the next owner.

        The next ``init_transactions`` under this id (or the broker's timeout) aborts it.
        """
        for producer in (self.advisory, self.producer):
            if producer is None:
                continue
            try:
                producer.close(timeout=timeout_s)
            except Exception:  # closing after a failure must not mask that failure
                log.debug("producer close failed", exc_info=True)

    def _crash_if(self, point: CrashPoint) -> None:
        if (
            self.cfg.test_crash_point == point
            and self.committed >= self.cfg.test_crash_after_transactions
        ):
            log.warning("kafka.test_crash_point = %s: killing this process", point)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)


def _offsets(batches: Iterable[Batch]) -> dict[TopicPartition, OffsetAndMetadata]:
    merged: dict[TopicPartition, int] = {}
    for batch in batches:  # in processing order: the last batch's offset wins
        merged.update(batch.offsets)
    return {tp: OffsetAndMetadata(off, "", -1) for tp, off in merged.items()}
