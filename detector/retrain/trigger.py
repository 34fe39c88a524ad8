"""Drift events as a retraining trigger: the retrainer follows the drift topic."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import orjson

from detector.settings import Settings
from detector.stream.clients import make_consumer

log = logging.getLogger(__name__)


def triggers_retrain(event: Mapping[str, Any], tests: Collection[str]) -> bool:
    """Whether a drift event starts a run: only the tests in ``retrain.trigger_tests`` do.

    The alert-rate test also fires when a few machines are faulty, which a new model would
    learn as normal instead of fixing; by default only distribution tests trigger.
    """
    return event.get("test") in tests


class DriftTrigger:
    """A consumer of the drift topic; ``poll`` says whether a triggering drift event arrived."""

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
                    event = None
                if not isinstance(event, dict):
                    log.warning("skipping an unreadable drift event (%d bytes)", len(rec.value))
                    continue
                triggers = triggers_retrain(event, self.tests)
                log.info(
                    "drift event: %s test on model %s (%s)",
                    event.get("test"),
                    event.get("model_version"),
                    "starts a run" if triggers else "not in retrain.trigger_tests",
                )
                fired = fired or triggers
        return fired

    def close(self) -> None:
        self.consumer.close()
