"""The model in use: CURRENT loaded at start, then followed while the service runs.

    start:  load CURRENT (verified) -> score with it; no usable model: not ready, retried
    turn:   every reload_interval_s read CURRENT -> changed? load, verify -> swap or refuse

A registry fault is never the end of a session: a version that fails to load (checksum,
signature, unreadable, truncated, wrong type) is refused once and not retried until
CURRENT names another; a registry that cannot be read is checked again each interval,
counted and logged once per fault, and scoring goes on with the model in hand.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from detector.errors import ModelIntegrityError, RegistryError
from detector.features.temporal import TemporalState
from detector.health import HealthState
from detector.metrics import ServiceMetrics
from detector.model.scorer import Scorer
from detector.registry.store import ModelRegistry
from detector.settings import Settings

log = logging.getLogger(__name__)


def describe(exc: Exception) -> str:
    """A registry fault in one line: our own errors by message, others with their type."""
    if isinstance(exc, ModelIntegrityError | RegistryError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class ModelFollower:
    """Holds the scorer (and the per-entity temporal state its features need)."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        metrics: ServiceMetrics,
        health: HealthState,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.health = health
        self.scorer: Scorer | None = None
        self.temporal: TemporalState | None = None  # per-entity history, when the model uses it
        self._refused: set[str] = set()
        self._fault: str | None = None  # the registry fault last logged, logged once
        self._next_reload = 0.0

    def load_initial(self) -> bool:
        """Load CURRENT; on failure say why once (not once per retry) and stay not ready."""
        try:
            self.load(None)
        except Exception as exc:  # any registry fault: wait for a usable model, never crash
            reason = describe(exc)
            self.health.reason = f"no usable model: {reason}"
            if reason != self._fault:
                log.error(
                    "no usable model yet (%s); not ready, checking the registry every %.0f s",
                    reason,
                    max(1.0, self.settings.service.reload_interval_s),
                )
            self._fault = reason
            return False
        if self._fault is not None:
            log.info("the registry is usable again")
        self._fault = None
        return True

    def load(self, version: str | None) -> None:
        """Verify and load ``version`` (None = CURRENT) and score with it from now on."""
        started = time.perf_counter()
        self.swap(self.registry.load(version))
        self.metrics.model_load_seconds.set(time.perf_counter() - started)

    def swap(self, bundle: Any) -> None:
        scorer = Scorer(bundle, self.settings.features, self.settings.thresholds)
        old = self.scorer.version if self.scorer else None
        self.scorer = scorer
        if old:
            self.metrics.model_info.remove(old)
        self.metrics.model_info.labels(scorer.version).set(1)
        windows = scorer.spec.temporal_plan
        if not windows:
            self.temporal = None
        elif self.temporal is None or self.temporal.plan != windows:
            self.temporal = TemporalState(windows, self.settings.features.temporal_max_entities)
        self.metrics.model_loaded_at.set_to_current_time()
        self.health.model_version = scorer.version
        log.info("scoring with model %s (was %s)", scorer.version, old or "none")

    def maybe_reload(self) -> None:
        """Load CURRENT when it changed (at most every ``reload_interval_s``)."""
        now = time.monotonic()
        if now < self._next_reload:
            return
        self._next_reload = now + self.settings.service.reload_interval_s
        if self.scorer is None:
            return
        try:
            current = self.registry.current()
        except Exception as exc:
            self._registry_fault(exc)
            return
        if self._fault is not None:
            log.info("the registry is readable again (CURRENT = %s)", current)
            self._fault = None
        if current is None or current == self.scorer.version or current in self._refused:
            return
        try:
            self.load(current)
        except Exception as exc:
            self._refused.add(current)  # refused once, not retried until CURRENT changes again
            self.metrics.model_reloads.labels("refused").inc()
            log.error(
                "model %s refused, still scoring with %s: %s",
                current,
                self.scorer.version,
                describe(exc),
            )
            return
        self.metrics.model_reloads.labels("loaded").inc()

    def reload_due_now(self) -> None:
        """The next ``maybe_reload`` reads the registry (tests, and a forced check)."""
        self._next_reload = 0.0

    def _registry_fault(self, exc: Exception) -> None:
        reason = describe(exc)
        if reason == self._fault:
            return
        self._fault = reason
        self.metrics.model_reloads.labels("refused").inc()
        assert self.scorer is not None
        log.error(
            "cannot read the registry (%s); still scoring with %s, checking again every %g s",
            reason,
            self.scorer.version,
            self.settings.service.reload_interval_s,
        )
