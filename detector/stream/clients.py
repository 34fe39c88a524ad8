"""Kafka clients built from ``KafkaSettings``: one place for security and tuning.

Producers are idempotent with ``acks=all`` by default: an alert or dead letter counts as
delivered only once every in-sync replica has it, which is what lets the service commit
the input offsets behind it (at-least-once).
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from detector.settings import KafkaSettings
from detector.stream import kafka_python_fixes

kafka_python_fixes.apply()


def security_config(cfg: KafkaSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {"security_protocol": cfg.security_protocol}
    if cfg.sasl_mechanism is not None:
        conf["sasl_mechanism"] = cfg.sasl_mechanism
        conf["sasl_plain_username"] = cfg.sasl_username
        conf["sasl_plain_password"] = (
            cfg.sasl_password.get_secret_value() if cfg.sasl_password else None
        )
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(cfg, key)
        if value is not None:
            conf[key] = str(value)
    return conf


def _bootstrap(cfg: KafkaSettings) -> list[str]:
    if not cfg.bootstrap_servers:
        from detector.errors import ConfigError

        raise ConfigError(
            "kafka.bootstrap_servers is not set (env DETECTOR_KAFKA__BOOTSTRAP_SERVERS)"
        )
    return [s.strip() for s in cfg.bootstrap_servers.split(",") if s.strip()]


def consumer_config(cfg: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap_servers": _bootstrap(cfg),
        "client_id": cfg.client_id,
        "group_id": cfg.group_id,
        "enable_auto_commit": False,  # offsets are committed only after alerts are acknowledged
        "auto_offset_reset": cfg.auto_offset_reset,
        "max_poll_records": cfg.max_poll_records,
        "fetch_max_wait_ms": cfg.fetch_max_wait_ms,
        "session_timeout_ms": cfg.session_timeout_ms,
        # Heartbeats must be well inside the session timeout; a third is Kafka's advice.
        "heartbeat_interval_ms": max(100, cfg.session_timeout_ms // 3),
        "max_poll_interval_ms": cfg.max_poll_interval_ms,
        "request_timeout_ms": max(cfg.request_timeout_ms, cfg.session_timeout_ms + 5000),
        "reconnect_backoff_max_ms": cfg.reconnect_backoff_max_ms,
        "bootstrap_timeout_ms": cfg.bootstrap_timeout_ms,
        **security_config(cfg),
    }
    conf.update(overrides)
    return conf


def producer_config(cfg: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap_servers": _bootstrap(cfg),
        "client_id": f"{cfg.client_id}-producer",
        "acks": "all" if cfg.acks == "all" else 1,
        "linger_ms": cfg.linger_ms,
        "request_timeout_ms": cfg.request_timeout_ms,
        "reconnect_backoff_max_ms": cfg.reconnect_backoff_max_ms,
        "bootstrap_timeout_ms": cfg.bootstrap_timeout_ms,
        **security_config(cfg),
    }
    if cfg.compression_type != "none":
        conf["compression_type"] = cfg.compression_type
    conf.update(overrides)
    return conf


def make_consumer(cfg: KafkaSettings, **overrides: Any) -> KafkaConsumer:
    return KafkaConsumer(**consumer_config(cfg, **overrides))


def make_reader(cfg: KafkaSettings) -> KafkaConsumer:
    """A consumer outside any group, for reading a topic by assign + seek (no join, no
    commits): the retrain window, the backtest's history, the registry topic."""
    conf = consumer_config(cfg, group_id=None)
    conf.pop("group_id", None)
    return KafkaConsumer(**conf)


def make_producer(cfg: KafkaSettings, **overrides: Any) -> KafkaProducer:
    return KafkaProducer(**producer_config(cfg, **overrides))


def ensure_topics(
    bootstrap_servers: str,
    partitions: dict[str, int],
    topic_configs: dict[str, str] | None = None,
    **security: Any,
) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are)."""
    import contextlib

    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, **security)
    try:
        for name, n in partitions.items():
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=n,
                            replication_factor=1,
                            topic_configs=topic_configs or {},
                        )
                    ]
                )
    finally:
        admin.close()
