"""Getting the retrainer's metrics to Prometheus: served while it lives, pushed when it exits.

A long-running retrainer (``detector retrain --every 1h --on-drift``) is a process like the
service: Prometheus scrapes its ``/metrics`` (``--metrics-port``), its counters accumulate,
and ``up`` says when it is gone. A run that exits (``--once`` in a Kubernetes CronJob) is
over before any scrape: it pushes its registry to a Pushgateway (``--push-gateway URL``)
after each run, replacing the previous run's group, so the gateway always holds the last
run's outcome. That is the one use the Prometheus docs give the Pushgateway: the result of
a service-level batch job.
"""

from __future__ import annotations

import logging

from detector.health import HealthServer, HealthState
from detector.metrics import RetrainMetrics

log = logging.getLogger("detector.retrain")

# The job label the pushed group carries; the alert rules tell a pushed "last run failed"
# (a gauge-like reading) from a scraped counter by it.
PUSH_JOB = "detector-retrain-cron"


class _AlwaysUp(HealthState):
    """The retrainer has no batch loop to watch: alive and ready while it serves at all."""

    def __init__(self) -> None:
        super().__init__(stale_after_s=1.0)

    def live(self) -> tuple[bool, str]:
        return True, "retrainer up"

    def ready(self) -> tuple[bool, str]:
        return True, "retrainer up"


class RetrainExporter:
    """Serve ``metrics`` on ``host:port`` (port None: not served) and/or push them after each run."""

    def __init__(
        self,
        metrics: RetrainMetrics,
        host: str = "127.0.0.1",
        port: int | None = None,
        push_gateway: str | None = None,
        push_timeout_s: float = 10.0,
    ) -> None:
        self.metrics = metrics
        self.push_gateway = push_gateway
        self.push_timeout_s = push_timeout_s
        self._server = (
            HealthServer(host, port, metrics.registry, _AlwaysUp()) if port is not None else None
        )

    @property
    def port(self) -> int | None:
        """The port served (the real one when 0 asked for a free port)."""
        return self._server.port if self._server is not None else None

    def start(self) -> RetrainExporter:
        if self._server is not None:
            self._server.start()
            log.info("retrainer metrics on port %d (/metrics)", self._server.port)
        return self

    def after_run(self) -> bool:
        """Push the registry if a gateway is set; False (logged, never raised) when it fails.

        The run's outcome is already decided and published: a gateway that is down must not
        turn a promoted model into a failed job.
        """
        if self.push_gateway is None:
            return True
        from prometheus_client import push_to_gateway

        try:
            push_to_gateway(
                self.push_gateway,
                job=PUSH_JOB,
                registry=self.metrics.registry,
                timeout=self.push_timeout_s,
            )
        except OSError as exc:  # URLError, connection refused, timeouts, HTTP errors
            log.warning(
                "could not push retrain metrics to %s: %s; check --push-gateway",
                self.push_gateway,
                exc,
            )
            return False
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
