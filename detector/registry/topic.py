"""The model registry on a compacted Kafka topic (``registry.backend = "kafka"``): no shared disk.

    trainer:  publish into its own registry.path (as the directory registry does)
              -> each file of the version as records (chunks under the message size limit)
              -> a record saying the version is complete -> a CURRENT record when promoted
    replica:  follow the topic from the beginning -> mirror each complete version into its
              own registry.path -> the newest CURRENT record moves that mirror's CURRENT
              -> hot reload loads it from there, verified exactly as from a directory

Keys (the topic is compacted: the newest record of each key is what stays)::

    v/<version>/f/<file>/<chunk>   a chunk of one file of the version (bundle, manifest,
                                   signature, REJECTED.json); header ``chunks``
    v/<version>                    JSON {"files": {file: {"chunks": n, "size": bytes}}}
    CURRENT                        the version the last promotion or rollback made current
    h/<time>/<version>             one per promotion: the history a rollback reads

Nothing from the topic is trusted: a version's files are written as received and the
registry verifies them when they are loaded (sha256 against the manifest; the signature
with ``registry.signing_key``), so a tampered record is refused as a tampered file is,
and the service keeps scoring with the version it has. A version is immutable: records
of a version already mirrored are ignored.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from detector.errors import RegistryError
from detector.model.bundle import ModelBundle
from detector.registry.files import VERSION_NAME, _fsync_dir, _write_durable
from detector.registry.store import STAGING_PREFIX, ModelRegistry
from detector.settings import KafkaSettings, RegistrySettings

log = logging.getLogger(__name__)

CURRENT_KEY = b"CURRENT"
# A chunk record carries this much besides its bytes (key, headers, batch framing), at most.
RECORD_OVERHEAD_BYTES = 16 * 1024
# After the start, following the topic waits at most this long per look (the service's
# loop calls it between batches: a new version of a few MB arrives well within it).
FOLLOW_TIMEOUT_S = 5.0

# A record to send: key, value (None: a tombstone, which compaction removes), headers.
Record = tuple[bytes, bytes | None, list[tuple[str, bytes]]]


def open_registry(registry: RegistrySettings, kafka: KafkaSettings) -> ModelRegistry:
    """The registry ``registry.backend`` names: the directory, or the topic mirrored there."""
    if registry.backend == "kafka":
        return TopicRegistry(registry, kafka)
    return ModelRegistry(registry)


class TopicRegistry(ModelRegistry):
    """A ``ModelRegistry`` whose directory mirrors a Kafka topic, and which publishes there."""

    def __init__(self, settings: RegistrySettings, kafka: KafkaSettings) -> None:
        super().__init__(settings)
        self.settings = settings
        self.kafka = kafka
        self.topic = settings.topic
        self._consumer: Any = None
        self._tps: list[Any] = []
        self._chunks: dict[str, dict[str, dict[int, bytes]]] = {}
        self._layouts: dict[str, dict[str, dict[str, int]]] = {}
        self._wanted_current: str | None = None
        self._promotions: list[tuple[str, str]] = []  # (time, version) of promotion records
        self._synced_once = False
        self._syncing = False  # inside sync: reads use the mirror as it stands
        self._topic_made = False  # created here if missing, once

    # -- following the topic -------------------------------------------------------------
    def sync(self, timeout_s: float | None = None) -> None:
        """Apply the topic's records up to its end as of now (at most ``timeout_s``)."""
        if timeout_s is None:
            timeout_s = self.settings.sync_timeout_s if not self._synced_once else FOLLOW_TIMEOUT_S
        consumer = self._follow()
        if consumer is None:
            return
        self._syncing = True
        try:
            self._read_to_end(consumer, timeout_s)
        finally:
            self._syncing = False

    def _read_to_end(self, consumer: Any, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        mirrored_before = len(self._layouts)
        ends = consumer.end_offsets(self._tps, timeout_ms=int(timeout_s * 1000))
        while any(consumer.position(tp) < ends[tp] for tp in self._tps):
            if time.monotonic() > deadline:
                log.warning(
                    "registry topic %s: not read to its end within %.0f s; using what was read",
                    self.topic,
                    timeout_s,
                )
                break
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    self._apply(record.key, record.value, dict(record.headers or []))
            # Some brokers (Tansu) report a stale end for a while: ask again when reached.
            if all(consumer.position(tp) >= ends[tp] for tp in self._tps):
                ends = consumer.end_offsets(self._tps)
        self._synced_once = True
        self._move_current()
        if len(self._layouts) > mirrored_before:
            # Bound the mirror as the trainer bounds its directory (never CURRENT).
            ModelRegistry.prune(self)

    def _follow(self) -> Any:
        """The topic's reader, assigned from the beginning; None while the topic is missing."""
        if self._tps:
            return self._consumer
        from kafka import TopicPartition

        from detector.stream.clients import make_reader

        if self._consumer is None:
            self._consumer = make_reader(self.kafka)
        parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:  # no model published yet: nothing to follow, ask again next time
            return None
        self._tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self._consumer.assign(self._tps)
        self._consumer.seek_to_beginning(*self._tps)
        return self._consumer

    def _apply(self, key: bytes | None, value: bytes | None, headers: dict[str, bytes]) -> None:
        name = (key or b"").decode(errors="replace")
        if key == CURRENT_KEY:
            version = (value or b"").decode(errors="replace").strip()
            self._wanted_current = version if VERSION_NAME.fullmatch(version) else None
            return
        parts = name.split("/")
        if parts[0] == "h" and len(parts) == 3:
            self._promotions.append((parts[1], parts[2]))
            return
        if parts[0] != "v" or len(parts) < 2 or not VERSION_NAME.fullmatch(parts[1]):
            log.warning("registry topic %s: record %r is not ours; ignored", self.topic, name[:80])
            return
        version = parts[1]
        if value is None:
            return  # a tombstone: the version was pruned (this mirror prunes on its own)
        if len(parts) == 2:
            try:  # kept even for a version mirrored already: a prune names its records
                self._layouts[version] = json.loads(value)["files"]
            except (ValueError, KeyError, TypeError):
                log.warning("registry topic %s: version %s has a bad layout", self.topic, version)
                return
        if (self.versions_dir / version).is_dir():
            return  # mirrored already: versions are immutable
        if len(parts) == 5 and parts[2] == "f" and parts[4].isdigit():
            self._chunks.setdefault(version, {}).setdefault(parts[3], {})[int(parts[4])] = value
        self._mirror_if_complete(version)

    def _mirror_if_complete(self, version: str) -> None:
        layout = self._layouts.get(version)
        got = self._chunks.get(version, {})
        if layout is None or any(
            len(got.get(f, {})) != int(spec.get("chunks", -1)) for f, spec in layout.items()
        ):
            return
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.versions_dir / f"{STAGING_PREFIX}{version}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            for f in layout:
                if "/" in f or f.startswith("."):
                    raise RegistryError(f"version {version}: file name {f!r} refused")
                _write_durable(staging / f, b"".join(got[f][i] for i in sorted(got[f])))
            _fsync_dir(staging)
            staging.rename(self.versions_dir / version)
            _fsync_dir(self.versions_dir)
        except (OSError, RegistryError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            log.error("registry topic %s: version %s not mirrored: %s", self.topic, version, exc)
            return
        finally:
            self._chunks.pop(version, None)
        log.info("model version %s mirrored from topic %s", version, self.topic)

    def _move_current(self) -> None:
        wanted = self._wanted_current
        if wanted is None or not (self.versions_dir / wanted).is_dir():
            return
        if super().current() != wanted:
            self._set_current(wanted)  # the loader verifies it; a bad one is refused there

    def prune(self) -> list[str]:
        """Prune the directory, then send tombstones for the pruned versions' records, so
        compaction removes them from the topic too (the trainer's and `models prune`'s)."""
        doomed = super().prune()
        tombstones: list[Record] = []
        for version in doomed:
            for f, spec in self._layouts.get(version, {}).items():
                tombstones += [
                    (f"v/{version}/f/{f}/{i}".encode(), None, [])
                    for i in range(int(spec.get("chunks", 0)))
                ]
            tombstones.append((f"v/{version}".encode(), None, []))
        if tombstones:
            self._send(tombstones)
        return doomed

    # -- reading: the mirror, brought up to date first -------------------------------------
    def current(self) -> str | None:
        if not self._syncing:
            self.sync()
        return super().current()

    def load(self, version: str | None = None) -> ModelBundle:
        self.sync()
        return super().load(version)

    def list(self) -> list[Any]:
        if not self._syncing:
            self.sync()
        return super().list()

    # -- writing: to the topic, then to the mirror ------------------------------------------
    def publish(
        self, bundle: ModelBundle, promote: bool = True, rejected_reason: str | None = None
    ) -> str:
        self.sync()
        version = super().publish(bundle, promote=False, rejected_reason=rejected_reason)
        self._send_version(version)
        if promote and rejected_reason is None:
            self.promote(version)
        return version

    def promote(self, version: str, force: bool = False) -> None:
        self.sync()
        info = self.info(version)
        if info.rejected and not force:
            raise RegistryError(
                f"version {version} was rejected ({info.rejected.get('reason')}); use --force"
            )
        self.verify(version)
        when = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        self._send([(CURRENT_KEY, version.encode(), []), (f"h/{when}/{version}".encode(), b"", [])])
        self._wanted_current = version
        self._promotions.append((when, version))
        self._set_current(version)

    def rollback(self) -> str:
        self.sync()
        current = super().current()
        earlier = [
            v
            for _, v in sorted(self._promotions)
            if v != current and (self.versions_dir / v).is_dir()
        ]
        if not earlier:
            raise RegistryError("nothing to roll back to: no earlier promoted version exists")
        self.promote(earlier[-1], force=True)
        return earlier[-1]

    def _send_version(self, version: str) -> None:
        directory = self.versions_dir / version
        step = self.settings.chunk_bytes
        records: list[Record] = []
        layout: dict[str, dict[str, int]] = {}
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            data = path.read_bytes()
            chunks = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
            layout[path.name] = {"chunks": len(chunks), "size": len(data)}
            header = [("chunks", str(len(chunks)).encode())]
            for i, chunk in enumerate(chunks):
                records.append((f"v/{version}/f/{path.name}/{i}".encode(), chunk, header))
        records.append((f"v/{version}".encode(), json.dumps({"files": layout}).encode(), []))
        self._send(records)
        self._layouts[version] = layout
        sizes = ", ".join(f"{f} {spec['size']:,} B" for f, spec in layout.items())
        log.info("model version %s sent to topic %s (%s)", version, self.topic, sizes)

    def _send(self, records: Sequence[Record]) -> None:
        """Send and wait for every acknowledgement; a refusal names the setting to change."""
        from kafka.errors import KafkaError, MessageSizeTooLargeError

        from detector.stream.clients import ensure_topics, make_producer, security_config

        if not self._topic_made:
            try:
                ensure_topics(
                    str(self.kafka.bootstrap_servers),
                    {self.topic: 1},
                    topic_configs={"cleanup.policy": "compact"},
                    **security_config(self.kafka),
                )
            except KafkaError as exc:
                # Without the Create ACL the broker refuses even for a topic that exists:
                # use it as it is; if it is missing, the sends below say so.
                log.info("registry topic %s not created here (%s)", self.topic, exc)
            self._topic_made = True
        limit = max(1_048_576, self.settings.chunk_bytes + RECORD_OVERHEAD_BYTES)
        producer = make_producer(self.kafka, max_request_size=limit)
        try:
            futures = [
                producer.send(self.topic, key=key, value=value, headers=headers)
                for key, value, headers in records
            ]
            producer.flush(self.kafka.request_timeout_ms / 1000)
            for f in futures:
                f.get(timeout=self.kafka.request_timeout_ms / 1000)
        except MessageSizeTooLargeError as exc:
            raise RegistryError(
                f"topic {self.topic} refused a record of up to {self.settings.chunk_bytes:,} B "
                f"({exc}): lower registry.chunk_bytes, or raise the topic's max.message.bytes"
            ) from None
        except KafkaError as exc:
            raise RegistryError(f"cannot write to registry topic {self.topic}: {exc}") from None
        finally:
            producer.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer, self._tps = None, []
