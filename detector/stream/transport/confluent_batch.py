"""One ``consume()`` of confluent-kafka as the loop's batch, its columns read when needed.

Every record needs its value (parsing) and the batch needs each partition's last offset
(the commit: one partition read per record finds it). The other columns (offsets,
timestamps, keys) are read record by record, for the few records that become alerts or
dead letters, or when an event carries no time of its own. Reading all of them up front
was a method call per record and column: the poll stage took 0.74-0.84 us per event in
``bench.transports`` before, 0.56-0.71 after.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from operator import methodcaller
from typing import Any, TypeVar, overload

from kafka import TopicPartition

T = TypeVar("T")


class LazyColumn(Sequence[T]):
    """A column read from the messages position by position: an alert's source costs one
    read, not a column's worth."""

    __slots__ = ("_messages", "_read")

    def __init__(self, messages: list[Any], read: Callable[[Any], T]) -> None:
        self._messages = messages
        self._read = read

    def __len__(self) -> int:
        return len(self._messages)

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> list[T]: ...
    def __getitem__(self, index: int | slice) -> T | list[T]:
        if isinstance(index, slice):
            return [self._read(m) for m in self._messages[index]]
        return self._read(self._messages[index])

    def __iter__(self) -> Iterator[T]:
        return map(self._read, self._messages)


def _timestamp_ms(message: Any) -> int:
    return int(message.timestamp()[1])


class MessageBatch:
    """Records of one poll in poll order (``detector.pipeline.Records``), from librdkafka
    ``Message`` objects without errors.

    ``topic`` is the subscription's single topic when it has one (no per-record lookup);
    None reads each record's own.
    """

    def __init__(self, messages: list[Any], topic: str | None, fetch_seconds: float = 0.0):
        self._messages = messages
        self._topic = topic
        self.values: list[bytes | None] = [m.value() for m in messages]
        # Messages of a partition arrive in offset order: the last one wins. One read per
        # record (its partition); the last record's index per partition is found in C.
        self.partitions: Sequence[int] = [m.partition() for m in messages]
        where = zip(self.topics, self.partitions, strict=True)
        last = dict(zip(where, range(len(messages)), strict=True))
        self.next_offsets = {
            TopicPartition(t, p): messages[i].offset() + 1 for (t, p), i in last.items()
        }
        self.fetch_seconds = fetch_seconds
        self.offsets: Sequence[int] = LazyColumn(messages, methodcaller("offset"))
        self.timestamps_ms: Sequence[int] = LazyColumn(messages, _timestamp_ms)
        self.keys: Sequence[bytes | None] = LazyColumn(messages, methodcaller("key"))

    def __len__(self) -> int:
        return len(self.values)

    @cached_property
    def topics(self) -> Sequence[str]:
        if self._topic is not None:
            return [self._topic] * len(self._messages)
        return LazyColumn(self._messages, methodcaller("topic"))
