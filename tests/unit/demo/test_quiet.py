"""The demo's log records go to its log file, and the logging set-up is restored after."""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

import pytest

from detector.demo.quiet import logs_to_file


def test_records_of_every_logger_go_to_the_file_and_none_to_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a console log set-up like the CLI's (a stderr handler on the root logger)
    root = logging.getLogger()
    before = root.handlers[:]
    console = logging.StreamHandler(sys.stderr)
    root.handlers[:] = [console]
    errors: list[str] = []
    try:
        # When kafka-python, the service and a failing thread log during the demo
        with logs_to_file(tmp_path / "demo.log", errors) as path:
            logging.getLogger("kafka.net.manager").error("Connection failed: 111 ECONNREFUSED")
            logging.getLogger("kafka.coordinator").info("an INFO line kafka-python writes")
            logging.getLogger("detector.drift.monitor").warning("drift detected by psi test")
            t = threading.Thread(target=lambda: 1 / 0, name="boom")
            t.start()
            t.join()
        after = root.handlers[:]
    finally:
        root.handlers[:] = before
    # Then the console got none of it; the file got the errors, warnings and the traceback
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    text = path.read_text()
    assert "ECONNREFUSED" in text and "drift detected by psi test" in text
    assert "ZeroDivisionError" in text and "an INFO line" not in text
    assert errors == ["boom: ZeroDivisionError: division by zero"]
    # ...and the console set-up is back once the demo ends
    assert after == [console]
