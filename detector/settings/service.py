"""``[service]``: the running service's endpoints, reload, shutdown, cooldown, logs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from detector.settings.base import Section


class ServiceSettings(Section):
    """The running service: endpoints, reload, shutdown, alert cooldown, logs."""

    metrics_host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address the metrics and health endpoints bind: loopback unless opened on purpose (the container image sets 0.0.0.0 so probes and Prometheus reach it).",
    )
    metrics_port: int = Field(
        9108,
        ge=0,
        le=65_535,
        description="Port of /metrics, /healthz and /readyz (0 = pick a free port).",
    )
    reload_interval_s: float = Field(
        10.0,
        ge=0.0,
        le=86_400,
        description="How often the registry's CURRENT is checked between batches.",
    )
    shutdown_grace_s: float = Field(
        30.0,
        ge=1.0,
        le=3_600,
        description="On SIGTERM the batch in hand is finished and committed within this time.",
    )
    alert_cooldown_s: float = Field(
        0.0,
        ge=0.0,
        le=86_400,
        description="Per-entity cooldown: repeated alerts of the same or lower severity are counted, not sent (0 = off).",
    )
    heartbeat_stale_s: float = Field(
        60.0, ge=1.0, description="/healthz fails when the loop has not turned for this long."
    )
    poll_timeout_ms: int = Field(
        500, ge=10, le=60_000, description="How long one poll waits when the topic is idle."
    )
    fetch_process: bool = Field(
        True,
        description="Run the Kafka consumer (fetching and record decoding, pure Python) in a child process that fetches the next batch while this one is scored: about 1.5x the events/s when a second core is free. Off: one process.",
    )
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
