"""`detector demo` end to end, in its short mode (issue 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it holds no resources but count it as gone only if reaped.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_short_demo_catches_scenarios_and_leaves_no_process(
    tmp_path: Path, broker_kind: str
) -> None:
    # Given a fresh run folder and no Kafka configured (the demo starts its own broker, of
    # the kind this run tests; the jar cache and java settings pass through)
    keep = {"DETECTOR_KAFKA_CACHE", "DETECTOR_JAVA"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_") or k in keep}
    # When the demo runs for 12 seconds without the drift part
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "detector",
            "demo",
            "--duration",
            "12",
            "--no-drift",
            "--broker",
            broker_kind,
            "--out",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Then its summary exists as JSON and HTML, and shows the scenarios caught
    run_dir = next(tmp_path.glob("demo-*"))
    summary = json.loads((run_dir / "summary.json").read_text())
    html = (run_dir / "report.html").read_text()
    assert "Injected scenarios" in html and "data:image/png;base64," in html
    results = {s["name"]: s for s in summary["scenarios"]}
    assert results["spike"]["caught"]
    assert results["broken_correlation"]["caught"]
    assert results["malformed"]["caught"]
    assert results["missing_readings"]["caught"]  # all scored, none dead-lettered
    caught = [s for s in summary["scenarios"] if s["expect"] == "alert" and s["caught"]]
    assert len(caught) >= 4
    # ...every record is accounted for, the dead letters carry their reasons,
    assert summary["consumed"] == summary["events"] == summary["scored"] + summary["dead_letters"]
    assert summary["dead_letters_by_reason"] == {
        "invalid_json": 1,
        "not_an_object": 1,
        "bad_value": 1,
        "too_large": 1,
    }
    assert summary["false_alert_rate"] < 0.03
    assert summary["latency_ms"]["p50"] is not None
    assert "caught" in proc.stdout and "run folder" in proc.stdout
    # ...and the bundled broker it started is gone.
    assert summary["broker"]["embedded"] is True
    assert summary["broker"]["kind"] == broker_kind
    assert not pid_alive(summary["broker"]["pid"])
