"""All configuration in one place: the ``Settings`` class and how it is loaded.

Precedence, highest first: explicit arguments (CLI flags) > environment variables
(``DETECTOR_`` prefix, ``__`` between nested keys, e.g. ``DETECTOR_REGISTRY__PATH``) >
a TOML file (``--config PATH`` or ``DETECTOR_CONFIG``) > the defaults below.
Every knob has a type, a default, a bound and a description; ``config/detector.toml``
repeats them with a comment each. Unknown keys and bad values fail at start with a
message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from detector.errors import ConfigError

ENV_PREFIX = "DETECTOR_"
CONFIG_FILE_ENV = "DETECTOR_CONFIG"

CovarianceType = Literal["full", "tied", "diag", "spherical"]
DriftTest = Literal["alert_rate", "mean_log_likelihood", "psi"]
_DISTRIBUTION_TESTS: tuple[DriftTest, ...] = ("mean_log_likelihood", "psi")
_ALL_COVARIANCE_TYPES: tuple[CovarianceType, ...] = ("full", "tied", "diag", "spherical")
# Points of an exactly-once transaction where a test can kill the service (delivery.py).
CrashPoint = Literal["in_transaction", "before_offsets", "before_commit", "after_commit"]


class _Section(BaseModel):
    # Unknown keys are typos more often than not: refuse them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSettings(_Section):
    """The Gaussian mixture and its model-selection grid."""

    n_components_min: int = Field(
        1, ge=1, le=50, description="Smallest number of mixture components tried by the BIC search."
    )
    n_components_max: int = Field(
        10, ge=1, le=50, description="Largest number of mixture components tried by the BIC search."
    )
    covariance_types: list[CovarianceType] = Field(
        default_factory=lambda: list(_ALL_COVARIANCE_TYPES),
        min_length=1,
        description="Covariance structures tried by the BIC search.",
    )
    reg_covar: float = Field(
        1e-6,
        gt=0,
        le=1.0,
        description="Added to covariance diagonals (in standardized units) so near-constant features cannot make a component singular.",
    )
    max_iter: int = Field(200, ge=10, le=10_000, description="EM iterations per fit.")
    tol: float = Field(
        1e-3, gt=0, le=1.0, description="EM convergence threshold on the mean log-likelihood gain."
    )
    n_init: int = Field(1, ge=1, le=20, description="EM restarts per grid cell; the best is kept.")
    random_seed: int = Field(
        0,
        ge=0,
        description="Seed for the split, the subsample and EM initialisation: training is reproducible.",
    )

    @model_validator(mode="after")
    def _range_ordered(self) -> ModelSettings:
        if self.n_components_min > self.n_components_max:
            raise ValueError(
                f"n_components_min ({self.n_components_min}) must be <= "
                f"n_components_max ({self.n_components_max})"
            )
        return self


class TrainingSettings(_Section):
    """How training data is split, subsampled and searched."""

    calibration_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description="Share of normal rows held out to calibrate thresholds (never used to fit).",
    )
    bic_subsample_rows: int = Field(
        50_000,
        ge=1_000,
        description="The BIC grid search fits on a seeded subsample of at most this many rows; the winner is refit on all fit rows.",
    )
    n_jobs: int = Field(
        2, ge=1, le=64, description="Parallel processes for the BIC grid search (joblib)."
    )
    min_rows: int = Field(
        200,
        ge=10,
        description="Fewer normal rows than this is refused: thresholds at the 0.1th percentile need data.",
    )
    max_calibration_rows_stored: int = Field(
        50_000,
        ge=1_000,
        description="Calibration rows kept in the bundle for marginal (missing-feature) thresholds and percentiles.",
    )
    label_column: str | None = Field(
        None,
        description="Column with 0 = normal, 1 = anomaly; anomalous rows are dropped from training.",
    )
    timestamp_column: str = Field(
        "timestamp",
        description="Column holding the event time in CSV files; never used as a feature.",
    )
    entity_column: str = Field(
        "entity", description="Column holding the entity id in CSV files; never used as a feature."
    )


class ThresholdSettings(_Section):
    """Severity levels: each is a low percentile of held-out normal log-likelihoods."""

    levels: dict[str, float] = Field(
        default_factory=lambda: {"warning": 1.0, "critical": 0.1},
        description="Severity name -> percentile of calibration log-likelihoods (1.0 = 1% of normal events alert).",
    )
    top_features: int = Field(
        3,
        ge=1,
        le=50,
        description="Features listed per alert, by contribution to the Mahalanobis distance.",
    )

    @model_validator(mode="after")
    def _levels_valid(self) -> ThresholdSettings:
        if not self.levels:
            raise ValueError("at least one severity level is needed")
        for name, pct in self.levels.items():
            if not (0.0 < pct < 50.0):
                raise ValueError(f"levels.{name} = {pct}: a percentile must be in (0, 50)")
            if name in ("none", ""):
                raise ValueError(f"levels: {name!r} is reserved for 'no alert'")
        if len(set(self.levels.values())) != len(self.levels):
            raise ValueError(f"levels {self.levels}: two severities share a percentile")
        return self


class FeatureSettings(_Section):
    """Which columns are features and how they are encoded."""

    @model_validator(mode="after")
    def _windows_valid(self) -> FeatureSettings:
        for name, n in self.temporal.items():
            if not 2 <= n <= 10_000:
                raise ValueError(f"temporal.{name} = {n}: a window must be 2..10000 events")
        return self

    numeric: list[str] | None = Field(
        None, description="Numeric features in order; inferred from the training data when unset."
    )
    categorical: list[str] | None = Field(
        None,
        description="Categorical features (one-hot encoded); inferred (string columns) when unset.",
    )
    log1p: list[str] = Field(
        default_factory=list,
        description="Numeric features transformed with log1p before scaling (heavy-tailed counts: bytes, packets).",
    )
    auto_log1p_skew: float | None = Field(
        10.0,
        gt=0,
        description="When features.log1p is empty, numeric features that are never negative and whose training skewness exceeds this get log1p (heavy-tailed counts); unset = never. 10 was chosen by held-out log-density on training data (see README).",
    )
    exclude: list[str] = Field(default_factory=list, description="Columns never used as features.")
    temporal: dict[str, int] = Field(
        default_factory=dict,
        description="Per-entity temporal features: feature -> window N adds f__diff, f__meanN, f__stdN from the entity's last N events (needs entity and time columns in training data); empty = off.",
    )
    temporal_max_entities: int = Field(
        100_000,
        ge=1,
        description="Entities whose recent values the service keeps (least recently seen evicted first).",
    )
    missing_policy: Literal["marginalize", "impute", "reject"] = Field(
        "marginalize",
        description="Missing value: score on the present features' exact marginal density, impute the training mean, or reject the row.",
    )
    max_missing_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="A row missing more than this share of its features is rejected.",
    )
    max_categories: int = Field(
        200,
        ge=2,
        le=10_000,
        description="A text column with more distinct values than this is an id, not a category: excluded when inferred (shown in training's column table), refused when listed in features.categorical.",
    )
    decimal: Literal[".", ","] = Field(
        ".",
        description='Decimal separator of numbers in CSV files: "." or "," (0,38 reads as 0.38; a "." in a cell is then not a number, thousands separators are not read). With ".", a column of decimal-comma numbers is refused with this hint.',
    )


class RegistrySettings(_Section):
    """Where model versions live and how they are trusted."""

    path: Path = Field(
        Path("models"), description="Registry directory: versions/<version>/ and CURRENT."
    )
    signing_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key: when set, manifests are signed and unsigned or wrongly signed models are refused.",
    )
    keep_versions: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Retention: the newest N versions are kept (CURRENT is never deleted).",
    )
    on_library_mismatch: Literal["warn", "refuse"] = Field(
        "warn",
        description="A bundle made with another scikit-learn version: warn and load, or refuse.",
    )


class KafkaSettings(_Section):
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


class EventSettings(_Section):
    """Where things sit inside an input event."""

    values_key: str | None = Field(
        "values",
        description="Key of the object holding feature values; empty or unset = flat events with features at the top level.",
    )
    entity_key: str = Field(
        "entity", min_length=1, description="Key of the entity id (pump, host...)."
    )
    time_key: str = Field(
        "ts",
        min_length=1,
        description="Key of the event time (ISO 8601 or epoch ms); the Kafka timestamp is used when absent.",
    )
    max_record_bytes: int = Field(
        1_000_000, ge=64, description="Records larger than this are dead-lettered as too_large."
    )


class ServiceSettings(_Section):
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


class DriftSettings(_Section):
    """The drift window: sampling for retraining and drift statistics."""

    sample_rate: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Share of scored events published to the samples topic (1% of 5,000 ev/s fills a 50,000-row window in under 20 minutes).",
    )
    max_samples_per_batch: int = Field(200, ge=0, description="Cap on samples published per batch.")
    include_alerted: bool = Field(
        True, description="Also publish alerted rows (flagged, excluded from retraining)."
    )
    window_events: int = Field(
        5_000, ge=100, description="Sliding window of recent events the drift statistics cover."
    )
    min_window_events: int = Field(
        1_000, ge=50, description="No drift verdict before the window holds this many events."
    )
    alert_rate_p_value: float = Field(
        1e-4,
        gt=0,
        lt=0.5,
        description="Binomial test: alert rate drift when P(at least this many alerts | calibrated rate) is below this.",
    )
    mean_ll_z: float = Field(
        6.0,
        gt=0,
        description="Mean log-likelihood drift when it is this many standard errors below the calibration mean.",
    )
    psi_threshold: float = Field(
        0.25,
        gt=0,
        description="Population stability index per feature above which the feature has drifted (0.25 = major shift, the usual rule).",
    )
    clear_ratio: float = Field(
        0.5,
        gt=0,
        le=1.0,
        description="A firing test clears only when its statistic is back within this share of the threshold (p-value: this power of it), so a window hovering at the threshold raises one event.",
    )
    publish_events: bool = Field(
        True, description="Publish a drift event to kafka.drift_topic when a test fires."
    )


class RetrainSettings(_Section):
    """The retraining job and its validation gate."""

    window_max_samples: int = Field(
        50_000, ge=100, description="Most recent samples read from the samples topic."
    )
    window_max_age_s: float = Field(
        7 * 86_400,
        gt=0,
        description="Samples whose event time is older than this before the window's newest sample are ignored (not the clock: a backfill or replay of history trains on its own last span).",
    )
    window_max_future_s: float = Field(
        3_600,
        ge=0,
        description="A sample stamped more than this after the retrainer's clock is future-dated (a producer's clock error): it is left out of the window and never counts as its newest.",
    )
    min_samples: int = Field(
        1_000, ge=50, description="Fewer usable samples than this: refuse, keep the current model."
    )
    max_alerted_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="A window where more than this share alerted is mostly anomalies: refuse.",
    )
    holdout_fraction: float = Field(
        0.2,
        ge=0.05,
        le=0.5,
        description="Newest share of the window held out to validate the candidate.",
    )
    alert_rate_tolerance: float = Field(
        0.5,
        gt=0,
        description="Candidate's warning alert rate on the holdout must be within target * (1 +- this).",
    )
    max_worse_margin: float = Field(
        0.05,
        ge=0.0,
        description="Candidate's mean log-likelihood on the holdout may trail the current model's by at most this (nats per event; 0.05 is about 5% lower average density, the estimation noise between two equally good fits).",
    )
    trigger_tests: list[DriftTest] = Field(
        default_factory=lambda: list(_DISTRIBUTION_TESTS),
        description="Drift tests whose events start a run under --on-drift; the alert rate alone also rises when a few machines are faulty, which retraining does not fix.",
    )
    poll_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Reading the samples topic stops after this long without new records.",
    )


class Settings(BaseSettings):
    """The detector's whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    model: ModelSettings = Field(default_factory=ModelSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    thresholds: ThresholdSettings = Field(default_factory=ThresholdSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    event: EventSettings = Field(default_factory=EventSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _TOML_PATH.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


# The TOML path is chosen per load (CLI flag or env), so it travels in a context variable
# rather than in class-level config that would leak between loads.
_TOML_PATH: ContextVar[Path | None] = ContextVar("detector_toml_path", default=None)


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the effective settings; raise ``ConfigError`` naming every bad key.

    ``overrides`` are explicit arguments (CLI flags) as a nested dict, e.g.
    ``{"registry": {"path": "models"}}``. ``environ`` defaults to ``os.environ`` and is
    only read for ``DETECTOR_CONFIG``; pydantic-settings reads the prefixed variables.
    """
    env = os.environ if environ is None else environ
    path = Path(config_file) if config_file else None
    if path is None and env.get(CONFIG_FILE_ENV):
        path = Path(env[CONFIG_FILE_ENV])
    if path is not None:
        _read_toml(path)  # a missing or unparsable file names itself before anything else
    token = _TOML_PATH.set(path)
    try:
        return Settings(**dict(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=path)) from None
    except SettingsError as exc:
        # An environment variable holding a whole section that is not JSON; the message
        # names the field and the source, never the value (it may hold a secret).
        raise ConfigError(
            f"invalid configuration: {exc}; a section set as one variable must be a JSON "
            f"object, or set each key as {ENV_PREFIX}SECTION__KEY"
        ) from None
    finally:
        _TOML_PATH.reset(token)


def check_config_file(path: str | Path) -> Settings:
    """Validate one TOML file on its own (environment ignored): ``detector config check``."""
    data = _read_toml(Path(path))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=Path(path))) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def secret_keys(model: type[BaseModel] | None = None, prefix: str = "") -> set[str]:
    """Dotted names of every ``SecretStr`` setting (``kafka.sasl_password``...)."""
    out: set[str] = set()
    for name, info in (model or Settings).model_fields.items():
        annotation = info.annotation
        args = getattr(annotation, "__args__", ()) or ()
        if annotation is SecretStr or SecretStr in args:
            out.add(prefix + name)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out |= secret_keys(annotation, f"{prefix}{name}.")
    return out


def _looks_secret(key: str) -> bool:
    return key in secret_keys()


def format_validation_error(exc: ValidationError, source: Path | None = None) -> str:
    """One line per bad key: ``key = value: what is allowed``.

    No value of a secret setting is ever shown, nor the value of an unknown key (a
    misspelt secret is still a secret); as a last guard, any string given to a secret or
    unknown key is blanked out of every line, pydantic's own message included.
    """
    lines = []
    hidden: set[str] = set()
    where = f" (config file {source}, environment {ENV_PREFIX}*)" if source else ""
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(settings)"
        value = err.get("input")
        if err["type"] == "extra_forbidden" or _looks_secret(key):
            hidden |= set(_strings(value))
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (value not shown); check the spelling")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        shown = "***" if _looks_secret(key) else repr(value)
        if isinstance(value, dict):
            lines.append(f"{key}: {msg}")
        else:
            lines.append(f"{key} = {shown}: {msg}")
    text = f"invalid configuration{where}:\n  " + "\n  ".join(lines)
    for secret in sorted(hidden, key=len, reverse=True):
        if len(secret) >= 3:  # blanking "a" or "1" would garble the message, not protect it
            text = text.replace(secret, "***")
    return text


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif value is not None:
        yield str(value)


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted.key, value)`` leaves of a nested mapping (dicts of levels stay whole)."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and key != "levels":
            yield from flatten(value, f"{dotted}.")
        else:
            yield dotted, value


def describe_sources(
    settings: Settings,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, str, str]]:
    """``(key, shown value, where it came from)`` for ``detector config show``; secrets masked."""
    env = {k.upper(): v for k, v in (os.environ if environ is None else environ).items()}
    path = Path(config_file) if config_file else None
    if path is None and env.get(CONFIG_FILE_ENV):
        path = Path(env[CONFIG_FILE_ENV])
    from_file = dict(flatten(_read_toml(path))) if path else {}
    from_args = dict(flatten(overrides or {}))
    rows = []
    for key, value in flatten(settings.model_dump()):
        env_name = ENV_PREFIX + key.upper().replace(".", "__")
        if key in from_args:
            origin = "argument"
        elif env_name in env:
            origin = f"env {env_name}"
        elif key in from_file:
            origin = f"file {path}"
        else:
            origin = "default"
        shown = "**********" if isinstance(value, SecretStr) else repr(value)
        rows.append((key, shown, origin))
    return rows
