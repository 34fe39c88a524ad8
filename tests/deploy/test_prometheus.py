"""The alert rules under `promtool test rules`, compose's Prometheus config under `promtool
check config`, and a real Prometheus server scraping a running detector's /metrics.

promtool and prometheus come from Debian's `prometheus` package (.ci/run installs it);
where they cannot be had the tests say so and skip with that reason.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from detector.metrics import current
from tests.deploy.tools import DEPLOY, find_tool, report_missing

RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = Path(__file__).parent / "alerts_test.yml"
HOW = "apt-get install -y prometheus (Debian's package ships promtool and prometheus)"


def tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        report_missing(name, HOW)
        pytest.skip(f"{name} not installed: {HOW}")
    return path


def test_alert_rules_pass_their_promtool_unit_tests(tmp_path: Path) -> None:
    promtool = tool("promtool")
    # Given the rules and their unit tests side by side (rule_files is relative)
    shutil.copy(RULES, tmp_path / "alerts.yml")
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    # When promtool checks and tests them
    check = subprocess.run(
        [promtool, "check", "rules", "alerts.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    # Then both succeed
    assert check.returncode == 0, check.stdout + check.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert alerts == fired
    # The seven the deploy README promises are among them
    assert {
        "DetectorDown",
        "DetectorAlertRateHigh",
        "DetectorDriftDetected",
        "DetectorLagGrowing",
        "DetectorDeadLettersRising",
        "DetectorModelReloadRefused",
        "DetectorRetrainFailing",
    } <= alerts


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    promtool = tool("promtool")
    # Given the rules with the reload threshold silently disabled
    text = RULES.read_text().replace(
        'increase(detector_model_reloads_total{outcome="refused"}[15m]) > 0',
        'increase(detector_model_reloads_total{outcome="refused"}[15m]) > 1000',
    )
    text = text.replace('unless detector_model_reloads_total{outcome="refused"} offset 15m', "")
    assert text != RULES.read_text()
    (tmp_path / "alerts.yml").write_text(text)
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    # Then promtool's tests catch it
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DetectorModelReloadRefused" in result.stdout + result.stderr


def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    promtool = tool("promtool")
    # Given compose's config with its rule path pointed at the real file
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(RULES)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[object]:
    binary = tool("prometheus")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": "detector", "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for p in procs:  # stopped by the PID we started
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def query(base: str, promql: str) -> list[dict[str, object]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = json.loads(r.read())
    except OSError:
        return []  # not up yet
    assert body["status"] == "success", body
    return list(body["data"]["result"])


@pytest.mark.broker
def test_a_real_prometheus_scrapes_a_running_detector(
    broker: object, prometheus_for: object, tmp_path: Path
) -> None:
    from detector.health import HealthServer
    from tests.integration.streams import (
        events_with_anomalies,
        produce,
        service_thread,
        settings_for_test,
        train_and_publish,
        wait_for,
    )

    # Given a detector scoring a topic on the real broker, its /metrics on a loopback port
    settings = settings_for_test(broker.bootstrap_servers, tmp_path / "models")  # type: ignore[attr-defined]
    train_and_publish(settings, n=3000)
    broker.create_topics([settings.kafka.input_topic], partitions=1)  # type: ignore[attr-defined]
    raws, _ = events_with_anomalies(300, seed=3)
    produce(broker.bootstrap_servers, settings.kafka.input_topic, raws)  # type: ignore[attr-defined]
    with service_thread(settings) as service:
        server = HealthServer("127.0.0.1", 0, service.metrics.registry, service.health).start()
        try:
            wait_for(lambda: current(service.metrics.consumed) >= len(raws), 60, "events scored")
            # When a real Prometheus server scrapes it every second
            base = prometheus_for(f"127.0.0.1:{server.port}")  # type: ignore[operator]
            got: list[dict[str, object]] = []

            def scraped() -> bool:
                got[:] = query(base, 'detector_consumed_total{job="detector"}')
                return bool(got)

            wait_for(scraped, 60, "Prometheus to scrape the detector", interval_s=0.5)
            # Then its API has the detector's counter with the value the service counted
            assert float(got[0]["value"][1]) == len(raws)  # type: ignore[index]
            up = query(base, 'up{job="detector"}')
            assert up and up[0]["value"][1] == "1"  # type: ignore[index]
            # And the alert rules load and evaluate against it: nothing down, nothing firing
            wait_for(lambda: bool(query(base, "ALERTS") or _rules_evaluated(base)), 30, "rules")
            firing = [a["metric"] for a in query(base, 'ALERTS{alertstate="firing"}')]
            assert not [a for a in firing if a.get("alertname") == "DetectorDown"]  # type: ignore[union-attr]
        finally:
            server.stop()


def _rules_evaluated(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=2) as r:
            groups = json.loads(r.read())["data"]["groups"]
    except OSError:
        return False
    return bool(groups) and all(g.get("lastEvaluation", "").startswith("2") for g in groups)
