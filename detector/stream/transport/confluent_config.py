"""Our settings as librdkafka properties, one to one (the table in docs/configuration.md,
kept equal to ``CONSUMER_KEYS`` and ``PRODUCER_KEYS`` by a unit test)."""

from __future__ import annotations

from typing import Any

from detector.settings import KafkaSettings

# The largest record the producer sends: kafka-python's max_request_size default, so dead
# letters are cut at the same size on both transports.
MAX_MESSAGE_BYTES = 1_048_576
# librdkafka reports broker and group state this often (statistics.interval.ms): what
# /readyz reads between records.
STATS_INTERVAL_MS = 1_000
# How soon librdkafka fetches again once the loop has made room in its local queue.
FETCH_QUEUE_BACKOFF_MS = 10


def _security(cfg: KafkaSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {"security.protocol": cfg.security_protocol}
    if cfg.sasl_mechanism is not None:
        conf["sasl.mechanism"] = cfg.sasl_mechanism
        if cfg.sasl_username is not None:
            conf["sasl.username"] = cfg.sasl_username
        if cfg.sasl_password is not None:
            conf["sasl.password"] = cfg.sasl_password.get_secret_value()
    for ours, theirs in (
        ("ssl_cafile", "ssl.ca.location"),
        ("ssl_certfile", "ssl.certificate.location"),
        ("ssl_keyfile", "ssl.key.location"),
    ):
        value = getattr(cfg, ours)
        if value is not None:
            conf[theirs] = str(value)
    return conf


# Our setting -> librdkafka property (one to one; security_protocol, sasl_* and ssl_* too,
# in ``_security``). The docs table is rendered from these.
CONSUMER_KEYS = {
    "bootstrap_servers": "bootstrap.servers",
    "client_id": "client.id",
    "group_id": "group.id",
    "auto_offset_reset": "auto.offset.reset",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "session_timeout_ms": "session.timeout.ms",
    "max_poll_interval_ms": "max.poll.interval.ms",
    "request_timeout_ms": "socket.timeout.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
}
PRODUCER_KEYS = {
    "bootstrap_servers": "bootstrap.servers",
    "acks": "acks",
    "linger_ms": "linger.ms",
    "compression_type": "compression.type",
    "request_timeout_ms": "request.timeout.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
}


def consumer_config(cfg: KafkaSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {theirs: getattr(cfg, ours) for ours, theirs in CONSUMER_KEYS.items()}
    conf.update(
        {
            # Heartbeats well inside the session timeout: a third, as with kafka-python.
            "heartbeat.interval.ms": max(100, cfg.session_timeout_ms // 3),
            # Offsets move only when the service commits what was acknowledged.
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # Eager: a revocation is complete (and committed) before anyone gets the
            # partitions, the contract the service's on_revoked is written for.
            "partition.assignment.strategy": "range",
            # kafka-python's defaults, so both transports see the same records, and a
            # missing input topic is created where the broker allows it (kafka-python's
            # metadata requests ask for that; librdkafka's consumer does not by default).
            "isolation.level": "read_uncommitted",
            "allow.auto.create.topics": True,
            "statistics.interval.ms": STATS_INTERVAL_MS,
            # Once its local queue is full librdkafka stops fetching for this long
            # (default 1000 ms); the loop drains a full queue in well under that and then
            # waited: 120k events/s with the default, 150k with 10 ms (bench.transports).
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
            **_security(cfg),
        }
    )
    return conf


def producer_config(cfg: KafkaSettings) -> dict[str, Any]:
    conf: dict[str, Any] = {theirs: getattr(cfg, ours) for ours, theirs in PRODUCER_KEYS.items()}
    conf.update(
        {
            "client.id": f"{cfg.client_id}-producer",
            "acks": "all" if cfg.acks == "all" else 1,
            # Idempotent with acks=all, like kafka-python 3's producer: a retried send is
            # written once, in order.
            "enable.idempotence": cfg.acks == "all",
            "message.max.bytes": MAX_MESSAGE_BYTES,
            **_security(cfg),
        }
    )
    return conf
