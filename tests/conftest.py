"""Broker fixtures for the real-broker tests (integration, deploy): one broker per session, Apache Kafka or Tansu.

``DETECTOR_TEST_BROKER=kafka|tansu`` chooses; unset, Apache Kafka runs where java 17+ is
present and its jars are cached or mvn can fetch them, Tansu otherwise. The header of the
run says which. A test that needs one broker's feature is marked
``@pytest.mark.needs_broker("kafka", reason="...")``: on the other broker it is skipped with
that reason shown (``-rs`` is on), never silently.

``DETECTOR_TEST_CLIENT=kafka-python|confluent`` chooses the service's Kafka client
(``kafka.client``; kafka-python unset); ``@pytest.mark.needs_client("kafka-python",
reason="...")`` marks a test of one client's own machinery, skipped with the reason on the
other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from detector.stream.broker import BROKER_KINDS, BrokerKind, LocalBroker, local_broker
from tests.kafka_client import CLIENTS, client_of_run

BROKER_ENV = "DETECTOR_TEST_BROKER"

# Property tests draw the same examples on every run ("repeatable", the default), so a
# suite that passed passes again; HYPOTHESIS_PROFILE=explore draws new ones each run, to hunt
# for inputs no run has tried (each one found becomes an @example).
hypothesis_settings.register_profile("repeatable", derandomize=True, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

_session_broker: LocalBroker | None = None  # while the session's broker runs
_started: list[LocalBroker] = []
_KIND = pytest.StashKey[BrokerKind]()
_WHY = pytest.StashKey[str]()
_SAID = pytest.StashKey[bool]()


def _choice() -> tuple[BrokerKind, str]:
    """The broker of this run, and why."""
    from detector.stream.kafka_broker import default_broker_kind

    asked = os.environ.get(BROKER_ENV, "").strip().lower()
    if asked:
        if asked not in BROKER_KINDS:
            raise pytest.UsageError(
                f"{BROKER_ENV}={asked!r}: choose one of {', '.join(BROKER_KINDS)}"
            )
        return asked, f"{BROKER_ENV}={asked}"  # type: ignore[return-value]
    kind, why = default_broker_kind()
    return kind, f"default ({BROKER_ENV} unset): {why}"


def _label(kind: BrokerKind) -> str:
    from detector.stream.kafka_broker import KAFKA_VERSION

    return f"Apache Kafka {KAFKA_VERSION} (KRaft, one node)" if kind == "kafka" else "Tansu"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_broker(kind, reason): the test needs a feature only that broker (kafka|tansu) "
        "has; on the other one it is skipped with the reason",
    )
    config.addinivalue_line(
        "markers",
        "needs_client(client, reason): the test is about one Kafka client's own machinery "
        "(kafka-python|confluent); on a run of the other one it is skipped with the reason",
    )
    kind, why = _choice()
    config.stash[_KIND] = kind
    config.stash[_WHY] = why
    # Skip reasons are part of the result: a skipped broker test must say why.
    if "s" not in config.option.reportchars and "a" not in config.option.reportchars:
        config.option.reportchars += "s"


def _header(config: pytest.Config) -> str:
    return (
        f"integration broker: {_label(config.stash[_KIND])}, {config.stash[_WHY]}; "
        f"service's Kafka client: {client_of_run()}"
    )


def pytest_report_header(config: pytest.Config) -> str:
    # Called only when this conftest is an initial one (`pytest tests/integration`).
    config.stash[_SAID] = True
    return _header(config)


def pytest_collection_finish(session: pytest.Session) -> None:
    # A whole-suite run (`pytest`) loads this conftest late: say it before the tests run.
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if not config.stash.get(_SAID, False) and reporter is not None:
        reporter.write_line(_header(config))
        config.stash[_SAID] = True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kind = config.stash[_KIND]
    for item in items:
        for mark in item.iter_markers("needs_broker"):
            needed = mark.args[0] if mark.args else mark.kwargs.get("kind")
            if needed not in BROKER_KINDS:
                raise pytest.UsageError(f"{item.nodeid}: needs_broker({needed!r}) is not a broker")
            if needed != kind:
                reason = mark.kwargs.get("reason") or (mark.args[1] if len(mark.args) > 1 else "")
                if not reason:
                    raise pytest.UsageError(f"{item.nodeid}: needs_broker() without a reason")
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"needs {_label(needed)}, this run is on {_label(kind)}: {reason}"
                    )
                )
        for mark in item.iter_markers("needs_client"):
            needed = mark.args[0] if mark.args else mark.kwargs.get("client")
            if needed not in CLIENTS:
                raise pytest.UsageError(f"{item.nodeid}: needs_client({needed!r}) is not a client")
            reason = mark.kwargs.get("reason") or (mark.args[1] if len(mark.args) > 1 else "")
            if not reason:
                raise pytest.UsageError(f"{item.nodeid}: needs_client() without a reason")
            if needed != client_of_run():
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"needs the {needed} client, this run's is {client_of_run()}: "
                        f"{reason}"
                    )
                )


@pytest.fixture(scope="session")
def broker_kind(request: pytest.FixtureRequest) -> BrokerKind:
    return request.config.stash[_KIND]


@pytest.fixture(scope="session")
def broker(broker_kind: BrokerKind) -> Iterator[LocalBroker]:
    global _session_broker
    with local_broker(broker_kind) as b:
        _session_broker = b
        _started.append(b)
        try:
            yield b
        finally:
            _session_broker = None


@pytest.fixture
def make_topic(broker: LocalBroker) -> Callable[..., str]:
    def make(partitions: int = 1) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        broker.create_topics([name], partitions=partitions)
        return name

    return make


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    b = _session_broker
    if report.failed and b is not None:
        # Where to look: the broker's whole log is kept, its tail goes with the failure.
        report.sections.append(
            (
                "broker log",
                f"{b.describe()}, pid {b.pid}, full log: {b.log_path}\n...{b.log_tail(3000)}",
            )
        )
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    b = _started[-1] if _started else None
    if b is not None:
        terminalreporter.write_line(
            f"integration broker: {b.describe()} started in {b.start_s or 0:.1f} s, "
            f"log {b.log_path}"
        )
