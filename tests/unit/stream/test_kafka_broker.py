"""Getting and configuring the local Apache Kafka broker, without starting a JVM."""

from __future__ import annotations

import base64
import os
import stat
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from detector.errors import BrokerSetupError, BrokerUnavailableError
from detector.stream import kafka_broker as kb
from detector.stream.broker import local_broker


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(kb.CACHE_ENV, str(root))
    return root


@pytest.fixture
def fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An mvn on PATH that copies one jar to -DoutputDirectory and counts its runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "mvn-calls"
    script(
        bin_dir / "mvn",
        f"""for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${{a#-DoutputDirectory=}}";; esac; done
echo run >> {calls}
sleep 0.3
mkdir -p "$out" && echo jar > "$out/kafka_2.13-{kb.KAFKA_VERSION}.jar"
""",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    return calls


def test_the_pom_pins_the_version_the_code_runs() -> None:
    # Given the packaged pom
    pom = Path(kb.__file__).with_name("kafka_broker_pom.xml")
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    # When its kafka.version is read
    version = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    # Then it is the version the broker helper fetches and names its cache after
    assert version is not None and version.text == kb.KAFKA_VERSION
    assert kb.kafka_home().name == f"kafka-{kb.KAFKA_VERSION}"


def test_jars_are_fetched_once_even_by_concurrent_callers(cache: Path, fake_mvn: Path) -> None:
    # Given an empty cache and two callers at once
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(kb.kafka_libs())) for _ in range(2)]
    # When both ask for the jars, and a third later
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    later = kb.kafka_libs()
    # Then Maven ran once, every caller got the same complete folder, stamped
    assert fake_mvn.read_text().splitlines() == ["run"]
    assert results == [later, later]
    assert (later / f"kafka_2.13-{kb.KAFKA_VERSION}.jar").exists()
    assert f"kafka_2.13-{kb.KAFKA_VERSION}.jar" in (later.parent / kb.STAMP).read_text()
    assert later.parent.parent == cache


def test_a_failed_fetch_says_why_and_leaves_no_stamp(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an mvn that cannot resolve the artifact
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script(bin_dir / "mvn", "echo '[ERROR] Could not resolve dependencies'\nexit 1\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    # When the jars are asked for
    with pytest.raises(BrokerSetupError) as err:
        kb.kafka_libs()
    # Then the error carries Maven's message, and nothing half-fetched is left as complete
    assert "Could not resolve dependencies" in str(err.value)
    assert "exit 1" in str(err.value)
    assert not (kb.kafka_home() / kb.STAMP).exists()
    assert not list(kb.kafka_home().glob("libs*"))


def test_no_mvn_and_no_cached_jars_is_a_clear_error(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no mvn on PATH and an empty cache
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    # When the jars are asked for
    with pytest.raises(BrokerSetupError, match="mvn is not installed"):
        kb.kafka_libs()


def test_cached_jars_need_no_mvn(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a completed fetch and no mvn any more
    (kb.kafka_home() / "libs").mkdir(parents=True)
    (kb.kafka_home() / kb.STAMP).write_text("done\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    # When the jars are asked for, then the cached folder is used
    assert kb.kafka_libs() == kb.kafka_home() / "libs"


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no java anywhere
    monkeypatch.delenv(kb.JAVA_ENV, raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    # When the broker's java is looked for
    with pytest.raises(BrokerSetupError) as err:
        kb.java_binary()
    # Then the message says what to install, and the Tansu way out
    assert "needs java 17+" in str(err.value) and "DETECTOR_TEST_BROKER=tansu" in str(err.value)
    assert "java" in (kb.kafka_unavailable_reason() or "")


def test_an_old_java_is_refused_by_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a java 11 (its version on stderr, as java prints it)
    java = script(tmp_path / "java", "echo 'openjdk version \"11.0.21\" 2023-10-17' >&2\n")
    monkeypatch.setenv(kb.JAVA_ENV, str(java))
    # When it is checked, then it is refused naming its version and the minimum
    with pytest.raises(BrokerSetupError, match=r"is java 11; .* needs 17\+"):
        kb.java_binary()


@pytest.mark.parametrize(
    ("printed", "major"), [('"1.8.0_392"', 8), ('"17.0.15"', 17), ('"25"', 25)]
)
def test_java_versions_are_read_in_both_schemes(tmp_path: Path, printed: str, major: int) -> None:
    java = script(tmp_path / "java", f"echo 'openjdk version {printed}' >&2\n")
    assert kb.java_major(str(java)) == major


def test_server_properties_make_a_one_node_kraft_cluster(tmp_path: Path) -> None:
    # Given two ports and a data folder
    props = kb.server_properties(9092, 9093, tmp_path, {"num.partitions": "3"})
    # Then it is broker and controller in one, on loopback, internal topics at replication 1
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path)
    # ...and an override wins
    assert props["num.partitions"] == "3"


def test_cluster_ids_are_fresh_kafka_uuids() -> None:
    ids = {kb.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_an_unknown_broker_kind_is_refused() -> None:
    with pytest.raises(BrokerUnavailableError, match="unknown broker 'redpanda'"):
        local_broker("redpanda")  # type: ignore[arg-type]
