"""Log set-up: third-party lines only at WARNING+, never about connecting; classes named once."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector.logs import describe_error, last_connection_failure, setup_logging
from detector.stream.process_fetcher import _where_logs_go


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    kafka_level = logging.getLogger("kafka").level
    yield capsys
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(kafka_level)


class KafkaConnectionError(Exception):
    """Named like kafka-python's, whose str() starts with the class name again."""

    def __str__(self) -> str:
        return "KafkaConnectionError: 111 ECONNREFUSED"


def test_kafka_python_connection_lines_are_dropped_and_other_warnings_kept(
    captured: pytest.CaptureFixture[str],
) -> None:
    # Given the CLI's logging at INFO
    setup_logging("text", "INFO")
    exc = KafkaConnectionError()
    # When kafka-python logs what it logs per failed attempt, and then two other things
    logging.getLogger("kafka.net.manager").error("Connection failed: %s", exc)
    logging.getLogger("kafka.net.connection").error(
        "<KafkaConnection node_id=bootstrap-0>: Connection lost: %s", exc
    )
    logging.getLogger("kafka.net.manager").warning(
        "Bootstrap bootstrap-0 not ready; waiting 0.08 secs"
    )
    logging.getLogger("kafka.cluster").error("Metadata refresh: failed Cancelled")
    logging.getLogger("kafka.coordinator").info("Successfully joined group")
    logging.getLogger("kafka.coordinator.consumer").warning(
        "group_id is None: disabling auto-commit."
    )
    logging.getLogger("kafka.net.selector").warning(
        "Task <kafka.net.selector.Task object at 0x7fa049f36290> ran for 0.131s (>0.100s "
        "threshold). It is blocking the event loop -- likely a tight sync loop inside a "
        "coroutine. Other pollers will time out."
    )
    logging.getLogger("kafka.net.sasl.plain").warning("Sending username and password in the clear")
    logging.getLogger("detector.stream.service").info("consuming events")
    # Then only the security warning and our own line are printed
    lines = captured.readouterr().err.splitlines()
    assert len(lines) == 2, lines
    assert "WARNING kafka.net.sasl.plain: Sending username and password in the clear" in lines[0]
    assert "INFO    detector.stream.service: consuming events" in lines[1]
    # ...and the last connection message is kept for our retry line
    assert last_connection_failure() == "Metadata refresh: failed Cancelled"


def test_debug_lets_every_third_party_line_through(captured: pytest.CaptureFixture[str]) -> None:
    setup_logging("text", "DEBUG")
    logging.getLogger("kafka.net.manager").error("Connection failed: refused")
    logging.getLogger("kafka.conn").debug("sending request")
    err = captured.readouterr().err
    assert "Connection failed: refused" in err and "sending request" in err


def test_json_lines_carry_level_logger_and_message(captured: pytest.CaptureFixture[str]) -> None:
    import json

    setup_logging("json", "INFO")
    logging.getLogger("detector").warning("broker %s unreachable", "127.0.0.1:9")
    doc = json.loads(captured.readouterr().err.splitlines()[-1])
    assert doc["level"] == "WARNING" and doc["logger"] == "detector"
    assert doc["message"] == "broker 127.0.0.1:9 unreachable"


def test_describe_error_names_the_class_once() -> None:
    assert describe_error(KafkaConnectionError()) == "KafkaConnectionError: 111 ECONNREFUSED"
    assert describe_error(ValueError("bad")) == "ValueError: bad"
    assert describe_error(TimeoutError()) == "TimeoutError"


def test_the_fetch_process_logs_where_the_service_does(
    captured: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given the service logging to stderr, the fetch process shares its stderr
    setup_logging("text", "INFO")
    assert _where_logs_go() is None
    # When the root logger writes to a file instead (as during the demo)
    handler = logging.FileHandler(tmp_path / "demo.log")
    logging.getLogger().handlers[:] = [handler]
    # Then the fetch process is given that file as its stderr
    try:
        assert _where_logs_go() is handler.stream
    finally:
        handler.close()


def test_kept_records_skip_the_poll_loops_need_rejoin_false() -> None:
    # Given kept records of a logger that logs "need_rejoin: False" on every poll turn
    from detector.logs import keep_recent_records

    recent = keep_recent_records("test.kept.coordinator", maxlen=5)
    source = logging.getLogger("test.kept.coordinator")
    # When it logs it 100 times around one line that says something
    for _ in range(50):
        source.debug("need_rejoin: %s (from base.rejoin_needed)", False)
    source.debug("Sending JoinGroup to %s", "node 1")
    source.debug("need_rejoin: %s (from base.rejoin_needed)", True)
    for _ in range(50):
        source.debug("need_rejoin: %s (from base.rejoin_needed)", False)
    # Then the kept lines are the ones that say something
    lines = recent.lines()
    assert len(lines) == 2
    assert "Sending JoinGroup to node 1" in lines[0] and "need_rejoin: True" in lines[1]
