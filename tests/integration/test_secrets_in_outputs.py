"""No secret in what a connected service shows: the sentinel signing key grepped for in
every output of a `detector run` that reached the broker and scored.

Outputs covered: its log at DEBUG, `/metrics`, `/healthz`, `/readyz`, the alerts, dead
letters (values and headers), samples and drift topics, and `detector models list`,
`models show` and the model card HTML. (`tests/unit/test_secrets.py` covers the
configuration commands, the errors and a run that cannot connect.)
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detector.cli.main import app
from detector.registry.store import SIGNATURE_FILE
from detector.stream.broker import LocalBroker, free_port
from tests.integration.streams import (
    alerts_of,
    committed_total,
    env_for,
    events_with_anomalies,
    produce,
    read_topic,
    settings_for_test,
    train_and_publish,
    wait_for,
)

pytestmark = pytest.mark.broker

SENTINEL = "S3NTINEL-do-not-print-4711"


def _page(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as err:  # /readyz answers 503 with a body too
        return str(err.read().decode())


def _topic_text(bootstrap: str, topic: str) -> str:
    parts = []
    for r in read_topic(bootstrap, topic, idle_s=2.0):
        parts.append((r.value or b"").decode(errors="replace"))
        parts += [f"{k}={v.decode(errors='replace')}" for k, v in (r.headers or [])]
    return "\n".join(parts)


def test_a_connected_service_never_shows_the_signing_key(
    broker: LocalBroker, tmp_path: Path
) -> None:
    # Given a registry whose versions are signed with the sentinel key, and a service
    # logging at DEBUG with its metrics on a known port
    settings = settings_for_test(
        broker.bootstrap_servers,
        tmp_path / "models",
        registry={"signing_key": SENTINEL},
        drift={"sample_rate": 1.0},
    )
    version = train_and_publish(settings)
    assert (tmp_path / "models" / "versions" / version / SIGNATURE_FILE).exists()
    port = free_port()
    env = env_for(settings) | {
        "DETECTOR_REGISTRY__SIGNING_KEY": SENTINEL,
        "DETECTOR_SERVICE__LOG_LEVEL": "DEBUG",
        "DETECTOR_SERVICE__METRICS_PORT": str(port),
        "DETECTOR_DRIFT__SAMPLE_RATE": "1.0",
    }
    raws, _ = events_with_anomalies(600, seed=5)
    raws += [b"{not json", b"[1, 2, 3]"]
    log = tmp_path / "service.log"
    k = settings.kafka
    # (all topics made up front: a drift topic nobody wrote to is then read as empty)
    topics = [k.input_topic, k.alerts_topic, k.dead_letter_topic, k.samples_topic, k.drift_topic]
    broker.create_topics(topics, partitions=1)
    # When it scores a stream with alerts and dead letters, and its pages are read
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "detector", "run"], env=env, stdout=out, stderr=out
        )
    try:
        produced = produce(broker.bootstrap_servers, k.input_topic, raws)
        wait_for(
            lambda: (
                committed_total(broker.bootstrap_servers, k.group_id, k.input_topic)
                == len(produced)
            ),
            120,
            "every offset committed",
            tail=log,
        )
        base = f"http://127.0.0.1:{port}"
        outputs = {path: _page(base + path) for path in ("/metrics", "/healthz", "/readyz")}
    finally:
        proc.terminate()
        proc.wait(60)
    outputs["log"] = log.read_text()
    for topic in (k.alerts_topic, k.dead_letter_topic, k.samples_topic, k.drift_topic):
        outputs[topic] = _topic_text(broker.bootstrap_servers, topic)
    card = tmp_path / "card.html"
    for args in (["list"], ["show", "--report", str(card)], ["show", "--json"]):
        shown = CliRunner().invoke(app, ["models", *args], env=env)
        assert shown.exit_code == 0, shown.output
        outputs[f"models {' '.join(args)}"] = shown.output
    outputs["model card"] = card.read_text()

    # Then every output is really there (alerts, dead letters, samples, DEBUG lines,
    # counters) and none holds the key
    assert alerts_of(broker.bootstrap_servers, k.alerts_topic)
    assert "not_an_object" in outputs[k.dead_letter_topic]
    assert outputs[k.samples_topic]
    assert " DEBUG " in outputs["log"] and "detector_consumed_total" in outputs["/metrics"]
    assert version in outputs["models list"]
    leaked = [name for name, text in outputs.items() if SENTINEL in text]
    assert leaked == [], leaked
