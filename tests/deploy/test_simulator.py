"""Compose's simulator service: `detector simulate` streams the fleet onto a real broker,
and the detector scores it (faults become alerts, malformed records dead letters)."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

import detector.cli.simulate_command  # noqa: F401  (registers `simulate`)
from detector.cli.main import app
from tests.integration.streams import read_topic

pytestmark = pytest.mark.broker


def test_simulate_sends_the_fleet_with_its_faults(broker: object, make_topic: object) -> None:
    topic = make_topic(partitions=3)  # type: ignore[operator]
    # When the simulator sends two 50-step blocks of a 20-pump fleet, quickly
    n = 20 * 50 * 2
    r = CliRunner().invoke(
        app,
        [
            "simulate",
            "--bootstrap",
            broker.bootstrap_servers,  # type: ignore[attr-defined]
            "--topic",
            topic,
            "--rate",
            "20000",
            "--limit",
            str(n),
            "--block-steps",
            "50",
        ],
    )
    assert r.exit_code == 0, r.output
    assert f"sent {n} events to {topic}" in r.output
    # Then the topic holds exactly those, keyed by pump, malformed records among them
    records = read_topic(broker.bootstrap_servers, topic, expect=n)  # type: ignore[attr-defined]
    assert len(records) == n
    keys = {rec.key for rec in records}
    assert {f"pump-{i:02d}".encode() for i in range(20)} <= keys
    not_json = 0
    for rec in records:
        try:
            orjson.loads(rec.value)
        except orjson.JSONDecodeError:
            not_json += 1
    assert not_json >= 2  # one "not JSON" record in each block's malformed scenario
