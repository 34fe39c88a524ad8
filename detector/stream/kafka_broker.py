"""Apache Kafka itself as a local single-node KRaft broker, for tests, benchmarks and the demo.

Getting the broker: nothing is committed or bundled. On first use ``kafka_libs()`` runs Maven
on the packaged ``kafka_broker_pom.xml`` (``org.apache.kafka:kafka_2.13:KAFKA_VERSION`` and
the log4j2 binding), which copies the jars into ``~/.cache/detector/kafka-<version>/libs``
(the root is ``$DETECTOR_KAFKA_CACHE``, else ``$XDG_CACHE_HOME/detector``). A stamp file
marks a complete fetch, and a file lock makes concurrent fetches (parallel test sessions)
wait for the first. Java 17+ is needed to run it (``$DETECTOR_JAVA``, else
``$JAVA_HOME/bin/java``, else ``java`` on PATH) and ``mvn`` only for the first fetch; when
either is missing, ``BrokerSetupError`` says which and how to fix it.

By hand, the same fetch is::

    mvn -q -B -f detector/stream/kafka_broker_pom.xml dependency:copy-dependencies \\
        -DincludeScope=runtime -DoutputDirectory=~/.cache/detector/kafka-4.4.0/libs

``ApacheKafkaBroker`` has the interface of the Tansu ``EmbeddedBroker`` (``LocalBroker``):
a combined broker + controller on two free loopback ports, storage formatted with a fresh
cluster id in a temporary folder, a 512 MB heap, settings for a one-node cluster (internal
topics with replication factor 1, no initial rebalance delay), ready when it answers a
metadata request, stopped by its process group, its log kept in ``log_path``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import importlib.resources
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from detector.errors import BrokerSetupError
from detector.stream.broker import BrokerKind, LocalBroker, die_with_parent, free_port

# Kafka 4.x brokers need Java 17 (4.4.0's classes are major version 61); keep the pom's
# kafka.version in step (a unit test checks).
KAFKA_VERSION = "4.4.0"
MIN_JAVA = 17
CACHE_ENV = "DETECTOR_KAFKA_CACHE"
JAVA_ENV = "DETECTOR_JAVA"
FETCH_TIMEOUT_S = 900.0
# A JVM start plus KRaft's first election: ~4 s here on a quiet machine, more when loaded.
KAFKA_START_TIMEOUT_S = 90.0
HEAP_MB = 512
STAMP = ".fetched"

# A one-node cluster: every internal topic with replication factor 1 and few partitions
# (creating __consumer_offsets with the default 50 costs seconds on the first group join),
# no wait for more members before the first rebalance.
SINGLE_NODE_CONFIG: dict[str, str] = {
    "num.partitions": "1",
    "default.replication.factor": "1",
    "min.insync.replicas": "1",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # The service and tests create their topics; producing to a new name still works, as
    # on Tansu and on a default Kafka.
    "auto.create.topics.enable": "true",
    "delete.topic.enable": "true",
    # Two shared cores: fewer threads than the defaults (8 I/O, 3 network).
    "num.io.threads": "4",
    "num.network.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    "log.segment.bytes": str(64 * 1024 * 1024),
    # A SIGKILLed broker's registration blocks its restart until the session expires
    # (9 s by default); 4 s still leaves 8 heartbeats of slack on a loaded machine.
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "4000",
}

LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "detector"


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    return cache_root() / f"kafka-{version}"


def java_binary() -> str:
    """The java 17+ to run the broker with, or a ``BrokerSetupError`` saying what to install."""
    if os.environ.get(JAVA_ENV):
        java = os.environ[JAVA_ENV]
    elif os.environ.get("JAVA_HOME") and Path(os.environ["JAVA_HOME"], "bin", "java").exists():
        java = str(Path(os.environ["JAVA_HOME"], "bin", "java"))
    else:
        java = shutil.which("java") or ""
    if not java:
        raise BrokerSetupError(
            f"Apache Kafka {KAFKA_VERSION} needs java {MIN_JAVA}+ and none was found: install a "
            f"JDK (e.g. openjdk-17-jre-headless), or set {JAVA_ENV} or JAVA_HOME; "
            "or use the Tansu broker (DETECTOR_TEST_BROKER=tansu, --broker tansu)"
        )
    major = java_major(java)
    if major < MIN_JAVA:
        raise BrokerSetupError(
            f"{java} is java {major}; Apache Kafka {KAFKA_VERSION} needs {MIN_JAVA}+: "
            f"set {JAVA_ENV} or JAVA_HOME to a newer JDK"
        )
    return java


def java_major(java: str) -> int:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerSetupError(f"cannot run {java} -version: {exc}") from None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise BrokerSetupError(f"cannot read the version of {java}: {out.stderr.strip()[:300]}")
    first = int(m.group(1))
    return int(m.group(2) or 0) if first == 1 else first  # "1.8.0" is java 8


def kafka_unavailable_reason() -> str | None:
    """Why Apache Kafka cannot be used here (no java 17+, or no jars and no mvn), else None."""
    try:
        java_binary()
    except BrokerSetupError as exc:
        return str(exc)
    if not (kafka_home() / STAMP).exists() and not shutil.which("mvn"):
        return (
            f"the Apache Kafka {KAFKA_VERSION} jars are not in {kafka_home()} and mvn is not "
            "installed to fetch them (install Maven 3.8+)"
        )
    return None


def default_broker_kind() -> tuple[BrokerKind, str]:
    """Apache Kafka where it can run (java 17+, jars cached or mvn present), else Tansu; and why."""
    why_not = kafka_unavailable_reason()
    if why_not is None:
        return "kafka", "java 17+ and the Apache Kafka jars (or mvn to fetch them) are here"
    return "tansu", f"Apache Kafka is not usable here: {why_not}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def kafka_libs(version: str = KAFKA_VERSION) -> Path:
    """The folder of the broker's jars, fetched with Maven the first time (once per machine)."""
    home = kafka_home(version)
    libs = home / "libs"
    if (home / STAMP).exists():
        return libs
    with _locked(home.parent / f"kafka-{version}.lock"):
        if (home / STAMP).exists():  # another process fetched while we waited
            return libs
        mvn = shutil.which("mvn")
        if not mvn:
            raise BrokerSetupError(
                f"the Apache Kafka {version} jars are not in {home} and mvn is not installed: "
                "install Maven 3.8+ (it fetches them once), or use the Tansu broker "
                "(DETECTOR_TEST_BROKER=tansu, --broker tansu)"
            )
        tmp = home / f"libs.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        pom = importlib.resources.files("detector.stream") / "kafka_broker_pom.xml"
        with importlib.resources.as_file(pom) as pom_path:
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom_path),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp}",
                f"-Dkafka.version={version}",
            ]
            t0 = time.monotonic()
            try:
                out = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise BrokerSetupError(f"fetching Apache Kafka {version} failed: {exc}") from None
        jars = sorted(p.name for p in tmp.glob("*.jar")) if tmp.exists() else []
        if out.returncode != 0 or not any(j.startswith("kafka_2.13-") for j in jars):
            shutil.rmtree(tmp, ignore_errors=True)
            tail = (out.stdout + out.stderr).strip()[-2000:]
            raise BrokerSetupError(
                f"fetching Apache Kafka {version} with Maven failed (exit {out.returncode}; "
                f"command: {' '.join(cmd)}); is a Maven repository reachable?\n{tail}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        (home / STAMP).write_text(
            f"kafka {version}, fetched in {time.monotonic() - t0:.1f} s\n" + "\n".join(jars) + "\n"
        )
    return libs


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's Uuid)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka refuses ids that read as a command-line flag
            return cid


def server_properties(
    port: int, controller_port: int, data_dir: Path, overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        **SINGLE_NODE_CONFIG,
    }
    props.update(overrides or {})
    return props


class ApacheKafkaBroker(LocalBroker):
    """Apache Kafka on 127.0.0.1:<free port>: one KRaft node, data in a temporary folder.

    The data survives ``kill()``/``restart()`` (as a real broker's disk) and is removed when
    the broker is closed (``with`` block or interpreter exit); the log is kept.
    """

    name = "kafka"
    start_timeout_s = KAFKA_START_TIMEOUT_S

    def __init__(
        self,
        port: int | None = None,
        work_dir: Path | None = None,
        *,
        heap_mb: int = HEAP_MB,
        config: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(port, work_dir)
        self.controller_port = free_port()
        self.heap_mb = heap_mb
        self.cluster_id = new_cluster_id()
        self.data_dir = self.work_dir / "data"
        self.config_path = self.work_dir / "server.properties"
        self.log4j_path = self.work_dir / "log4j2.properties"
        self._overrides = dict(config or {})
        self._java = ""
        self._classpath = ""

    def describe(self) -> str:
        return f"Apache Kafka {KAFKA_VERSION} on {self.bootstrap_servers}"

    def _java_cmd(self, main: str, *args: str, tool: bool = False) -> list[str]:
        if tool:
            # A one-shot tool: the quick JIT tier and the serial GC halve its start.
            jvm = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
        else:
            # kafka-run-class.sh's defaults: short G1 pauses keep produce latency flat.
            jvm = [
                f"-Xms{min(self.heap_mb, 256)}m",
                f"-Xmx{self.heap_mb}m",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
            ]
        return [
            self._java,
            *jvm,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            f"-Dkafka.logs.dir={self.work_dir}",
            "-cp",
            self._classpath,
            main,
            *args,
        ]

    def _prepare(self) -> None:
        self._java = java_binary()
        self._classpath = str(kafka_libs() / "*")
        props = server_properties(self.port, self.controller_port, self.data_dir, self._overrides)
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        self.log4j_path.write_text(LOG4J2)
        cmd = self._java_cmd(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id,
            "-c",
            str(self.config_path),
            tool=True,
        )
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        with self.log_path.open("a") as log:
            log.write(f"$ {' '.join(cmd)}\n{out.stdout}{out.stderr}\n")
        if out.returncode != 0:
            raise BrokerSetupError(
                f"formatting the Kafka storage in {self.data_dir} failed (exit {out.returncode}): "
                f"{(out.stdout + out.stderr).strip()[-2000:]}"
            )

    def _launch(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._java_cmd("kafka.Kafka", str(self.config_path)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: stopped as a unit, never by our Ctrl-C
            preexec_fn=die_with_parent,
        )

    def _cleanup(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
