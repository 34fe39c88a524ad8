"""Drift events as a retraining trigger: the retrainer follows the drift topic."""

from __future__ import annotations

import logging
import uuid

import orjson

from detector.settings import Settings
from detector.stream.clients import make_consumer

log = logging.getLogger(__name__)


class DriftTrigger:
    """A consumer of the drift topic; ``poll`` says whether a drift event arrived."""

    def __init__(self, settings: Settings) -> None:
        # Its own group, starting at the end: only drift raised from now on triggers a run.
        self.consumer = make_consumer(
            settings.kafka,
            group_id=f"{settings.kafka.group_id}-retrainer-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="latest",
        )
        self.consumer.subscribe([settings.kafka.drift_topic])
        self.tests = set(settings.retrain.trigger_tests)

    def poll(self, timeout_s: float) -> bool:
        polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000))
        fired = False
        for records in polled.values():
            for rec in records:
                try:
                    event = orjson.loads(rec.value)
                except orjson.JSONDecodeError:
                    continue
                log.info(
                    "drift event: %s test on model %s",
                    event.get("test"),
                    event.get("model_version"),
                )
                fired = True
        return fired

    def close(self) -> None:
        self.consumer.close()


def wait_for_trigger(settings: Settings) -> DriftTrigger:
    return DriftTrigger(settings)
