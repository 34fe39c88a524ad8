"""A broker lost and back mid-session: our own lines say so, kafka-python's do not."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from detector.stream.broker import BrokerKind, local_broker
from tests.integration.streams import (
    settings_for_test,
    start_service_process,
    train_and_publish,
    wait_for,
)

pytestmark = pytest.mark.broker


def test_broker_lost_mid_session_is_one_line_per_check_and_recovery_is_said(
    tmp_path: Path, broker_kind: BrokerKind
) -> None:
    # Given `detector run` consuming from a broker of its own (this test stops it)
    broker = local_broker(broker_kind).start()
    try:
        port = broker.port
        settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")
        train_and_publish(settings, n=3000)
        log = tmp_path / "service.log"
        proc = start_service_process(settings, log)
        try:
            wait_for(lambda: "partitions assigned: ['" in log.read_text(), 60, "assignment")
            # When the broker goes away
            broker.stop()
            check = re.compile(
                rf"WARNING detector\.stream\.reach: broker 127\.0\.0\.1:{port} unreachable "
                r"\(connection refused\); the client reconnects, check (\d+) in (\d+\.\d) s$",
                re.MULTILINE,
            )
            wait_for(lambda: len(check.findall(log.read_text())) >= 3, 60, "three checks")
            # ...and comes back on the same port
            broker = local_broker(broker_kind, port=port).start()
            wait_for(lambda: "reachable again" in log.read_text(), 60, "recovery line")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
        text = log.read_text()
        # Then each check was one line of ours with the back-off, and recovery was said
        assert code == 0, text[-3000:]
        checks = check.findall(text)
        assert [int(n) for n, _ in checks] == list(range(1, len(checks) + 1))
        assert [float(d) for _, d in checks][:3] == [0.5, 1.0, 2.0]
        assert f"INFO    detector.stream.reach: broker 127.0.0.1:{port} reachable again" in text
        # ...and kafka-python said nothing about connecting (its other warnings may pass)
        for word in ("ECONNREFUSED", "Connection failed", "Connection lost", "Bootstrap"):
            assert word not in text, text[-3000:]
        assert "Traceback" not in text
    finally:
        broker.stop()
