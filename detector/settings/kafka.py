"""``[kafka]``: the cluster, topics, security, delivery and client tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from detector.settings.base import CrashPoint, Section


class KafkaSettings(Section):
    """The Kafka cluster, topics, security and client tuning."""

    bootstrap_servers: str | None = Field(
        None, description="host:port[,host:port]; unset = the demo starts an embedded broker."
    )
    client_id: str = Field(
        "detector", min_length=1, description="Client id reported to the broker."
    )
    group_id: str = Field(
        "detector",
        min_length=1,
        description="Consumer group; replicas in one group share the partitions.",
    )
    input_topic: str = Field("events", min_length=1, description="Topic the events are read from.")
    alerts_topic: str = Field(
        "alerts", min_length=1, description="Topic alerts are published to (key = entity id)."
    )
    dead_letter_topic: str = Field(
        "events.dead-letter",
        min_length=1,
        description="Topic bad records go to, bytes untouched, reason in headers.",
    )
    samples_topic: str = Field(
        "detector.samples",
        min_length=1,
        description="Topic the drift window's sampled rows go to (read by the retrainer).",
    )
    drift_topic: str = Field(
        "detector.drift", min_length=1, description="Topic drift events are published to."
    )
    client: Literal["kafka-python", "confluent"] = Field(
        "kafka-python",
        description="Kafka client library of the service: kafka-python (pure Python, the default) or confluent (confluent-kafka on librdkafka, the 'fast' extra: pip install 'detector[fast]'; decodes records in C, so service.fetch_process does not apply). exactly_once needs kafka-python.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism for SASL_* protocols."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never printed).")
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers.")
    ssl_certfile: Path | None = Field(None, description="Client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="Client private key (mutual TLS).")
    max_poll_records: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Records per poll = batch size; 1000 measured best here (bench-baseline.md).",
    )
    fetch_max_wait_ms: int = Field(
        50,
        ge=0,
        le=10_000,
        description="Broker waits at most this long for data: bounds latency at low rates.",
    )
    session_timeout_ms: int = Field(
        10_000,
        ge=1_000,
        le=300_000,
        description="Group session timeout; a dead replica's partitions move after this.",
    )
    commit_interval_ms: int = Field(
        100,
        ge=0,
        le=60_000,
        description="Acknowledged offsets are committed at most this often (0 = every batch); shutdown and rebalance always commit everything processed.",
    )
    max_poll_interval_ms: int = Field(
        300_000,
        ge=1_000,
        description="Longest gap between polls before the group evicts this replica.",
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new group starts: earliest loses nothing."
    )
    acks: Literal["all", "1"] = Field(
        "all", description="Producer acknowledgement: 'all' is what at-least-once needs."
    )
    linger_ms: int = Field(
        5, ge=0, le=1_000, description="Producer batching delay for alerts and dead letters."
    )
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none", description="Producer compression."
    )
    request_timeout_ms: int = Field(
        30_000, ge=1_000, description="Producer/consumer request timeout."
    )
    poll_stall_timeout_ms: int = Field(
        30_000,
        ge=2_000,
        le=600_000,
        description="A Kafka client poll that has not returned, or a group join not completed, after this long (kafka-python 3.0 can wedge in either after a rebalance) ends the fetch process and the service starts a new Kafka session; uncommitted work is redelivered. Time spent handing partitions over in a revocation does not count.",
    )
    bootstrap_timeout_ms: int = Field(
        10_000,
        ge=100,
        le=300_000,
        description="How long a client tries to reach the cluster at start before the service backs off and retries.",
    )
    reconnect_backoff_max_ms: int = Field(
        10_000, ge=50, description="Longest back-off between reconnect attempts."
    )
    delivery: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="at_least_once: after a crash or rebalance some alerts repeat, with the same alert_id (consumers de-duplicate). exactly_once: each batch's alerts, dead letters and input offsets commit in one Kafka transaction, so a consumer reading the alerts with isolation.level=read_committed sees each alert once; needs Apache Kafka 2.5+ and acks = 'all', costs throughput and latency (README).",
    )
    transactional_id: str | None = Field(
        None,
        min_length=1,
        description="exactly_once: this replica's transactional id, unique among live replicas and stable across its restarts (a StatefulSet pod name), so a restart aborts what its predecessor left open at once; unset = '<group_id>-<hostname>'.",
    )
    transaction_timeout_ms: int = Field(
        60_000,
        ge=1_000,
        le=900_000,
        description="exactly_once: the broker aborts a transaction left open this long by a replica that died and did not come back under its id; its partitions wait that long. At most the broker's transaction.max.timeout.ms (15 min by default).",
    )
    test_crash_point: CrashPoint | None = Field(
        None,
        description="Tests only (exactly_once): the service kills itself with SIGKILL at this point of a transaction, to show a crash there repeats and loses nothing.",
    )
    test_crash_after_transactions: int = Field(
        0,
        ge=0,
        description="Tests only: with test_crash_point, transactions committed before the one whose crash point kills the process.",
    )

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(
                f"security_protocol = {self.security_protocol} needs kafka.sasl_mechanism"
            )
        return self

    @model_validator(mode="after")
    def _delivery_possible(self) -> KafkaSettings:
        if self.delivery == "exactly_once":
            if self.client != "kafka-python":
                raise ValueError(
                    f"delivery = 'exactly_once' needs client = 'kafka-python' (got "
                    f"{self.client!r}): the transactions are written for kafka-python's "
                    "producer only"
                )
            if self.acks != "all":
                raise ValueError(
                    f"delivery = 'exactly_once' needs acks = 'all' (got {self.acks!r}): a "
                    "transactional producer is idempotent, and idempotence needs every "
                    "in-sync replica's acknowledgement"
                )
            if self.transaction_timeout_ms <= self.commit_interval_ms:
                raise ValueError(
                    f"delivery = 'exactly_once' needs transaction_timeout_ms "
                    f"({self.transaction_timeout_ms}) above commit_interval_ms "
                    f"({self.commit_interval_ms}): a transaction stays open at least that long"
                )
        elif self.test_crash_point is not None:
            raise ValueError(
                f"test_crash_point = {self.test_crash_point!r} is a point of a transaction: "
                "it needs delivery = 'exactly_once'"
            )
        return self
