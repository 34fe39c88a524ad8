"""Topics in memory: where the backtest's samples and drift events go instead of Kafka.

``MemoryTopic`` has the one method the service's observers call on a producer (``send``)
and the ``config`` they read, so the sampler and the drift monitor run unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detector.pipeline.letters import DEFAULT_MAX_MESSAGE_BYTES


@dataclass
class Delivered:
    """What ``send`` returns: an acknowledged send, as a done future looks."""

    is_done: bool = True

    def failed(self) -> bool:
        return False


@dataclass
class MemoryTopic:
    """Every value sent, per topic, in order."""

    messages: dict[str, list[bytes]] = field(default_factory=dict)
    config: dict[str, Any] = field(
        default_factory=lambda: {"max_request_size": DEFAULT_MAX_MESSAGE_BYTES}
    )

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None) -> Delivered:
        self.messages.setdefault(topic, []).append(value or b"")
        return Delivered()

    def take(self, topic: str) -> list[bytes]:
        """The values sent to ``topic`` since the last ``take``."""
        return self.messages.pop(topic, [])
