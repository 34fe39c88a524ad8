"""Outgoing messages and their size: a message the producer would refuse is never produced.

kafka-python refuses a record larger than its ``max_request_size`` (1 MiB by default) with
a failed future; the service then cannot commit the batch, restarts its session and fails
on the same record again, for ever. So every message is measured here first: a dead letter
over the limit is cut to fit (the headers say so, with the original's size and sha256), an
alert over it becomes a dead letter ``alert_too_large``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from detector.pipeline.reasons import Reason
from detector.stream.alerts import (
    ORIGINAL_KEY_SHA256_HEADER,
    ORIGINAL_KEY_SIZE_HEADER,
    ORIGINAL_SHA256_HEADER,
    ORIGINAL_SIZE_HEADER,
    TRUNCATED_HEADER,
    Source,
    dead_letter_headers,
)

# Room left for what the client adds around key, value and headers: a record batch header
# is 61 bytes and each record's varints a few dozen; 1 KiB covers it with margin.
RECORD_OVERHEAD_BYTES = 1024
# kafka-python's default max_request_size, for callers that have no producer at hand.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576


@dataclass(slots=True)
class Message:
    """One record to produce (the topic is the caller's: alerts or dead letters)."""

    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]] | None = None


def message_bytes(
    value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]] | None
) -> int:
    """Key + value + headers: what the producer's size check counts, less its fixed overhead."""
    size = len(value or b"") + len(key or b"")
    for name, header in headers or ():
        size += len(name) + len(header) + 10  # two varint lengths per header
    return size


def usable_bytes(max_request_size: int) -> int:
    """The key + value + headers budget under a producer's ``max_request_size``."""
    return max(1024, max_request_size - RECORD_OVERHEAD_BYTES)


@dataclass(slots=True)
class DeadLetter:
    """A record that will not be scored, as it will be produced."""

    position: int  # in the batch
    reason: Reason
    message: str
    out: Message
    truncated: bool = False


def dead_letter(
    position: int,
    value: bytes | None,
    key: bytes | None,
    source: Source,
    reason: Reason,
    message: str,
    limit_bytes: int,
) -> DeadLetter:
    """The dead letter of a record: its bytes untouched, or cut to fit ``limit_bytes``."""
    headers = dead_letter_headers(source, reason.value, message)
    if message_bytes(value, key, headers) <= limit_bytes:
        return DeadLetter(position, reason, message, Message(value, key, headers))
    original = value or b""
    cut = ["value"]
    extra = [
        (ORIGINAL_SIZE_HEADER, str(len(original)).encode()),
        (ORIGINAL_SHA256_HEADER, hashlib.sha256(original).hexdigest().encode()),
    ]
    # A key of more than a quarter of the budget is cut too, so the value keeps most of it.
    if key is not None and len(key) > limit_bytes // 4:
        extra += [
            (ORIGINAL_KEY_SIZE_HEADER, str(len(key)).encode()),
            (ORIGINAL_KEY_SHA256_HEADER, hashlib.sha256(key).hexdigest().encode()),
        ]
        key = key[: limit_bytes // 4]
        cut.insert(0, "key")
    headers = [*headers, (TRUNCATED_HEADER, ",".join(cut).encode()), *extra]
    room = max(0, limit_bytes - message_bytes(None, key, headers))
    return DeadLetter(
        position, reason, message, Message(original[:room], key, headers), truncated=True
    )
