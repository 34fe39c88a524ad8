"""Sinks: a batch's outcome onto its topics. Each send returns its acknowledgement future.

Dead letters go to ``kafka.dead_letter_topic`` with the record's bytes and the headers
``detector.pipeline`` gave them; alerts to ``kafka.alerts_topic`` keyed by entity. Samples
and drift events have their own senders in ``detector.drift``.
"""

from __future__ import annotations

from typing import Any

from detector.pipeline import BatchOutcome
from detector.settings import KafkaSettings


def publish(outcome: BatchOutcome, producer: Any, cfg: KafkaSettings) -> list[Any]:
    """Send the batch's dead letters and alerts; their futures, in that order."""
    send = producer.send
    futures = [
        send(cfg.dead_letter_topic, value=d.out.value, key=d.out.key, headers=d.out.headers)
        for d in outcome.dead_letters
    ]
    futures += [send(cfg.alerts_topic, value=a.out.value, key=a.out.key) for a in outcome.alerts]
    return futures
