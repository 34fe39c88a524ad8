"""The demo's summary: false alert rate per phase (split by the model that scored each
event), the retrain/reload verdict, and the HTML report that shows the same figures."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from detector.demo.fleet import Drift, FleetSpec, LabelledEvent
from detector.demo.summary import Recorder, Sent, summarize, timeline_arrays, verdict
from detector.metrics import ServiceMetrics
from detector.report.demo_page import demo_report

N_PER_PHASE = 1000
SHIFT_STEP = 10_000


def a_run(alerts_before: int, alerts_shifted: int, alerts_reloaded: int) -> dict:
    """Three phases of 1,000 normal events each: before the shift, shifted under v1, under v2."""
    events, positions, severity, versions = [], [], [], []
    for phase, (n_alerts, version, step0) in enumerate(
        [
            (alerts_before, "v1", 0),
            (alerts_shifted, "v1", SHIFT_STEP),
            (alerts_reloaded, "v2", SHIFT_STEP + N_PER_PHASE),
        ]
    ):
        for i in range(N_PER_PHASE):
            events.append(LabelledEvent(b"{}", step0 + i, f"pump-{i % 20:02d}", None))
            positions.append((0, phase * N_PER_PHASE + i))
            severity.append(1 if i < n_alerts else 0)
            versions.append(version)
    rec = Recorder()
    rec.position = positions
    rec.severity = [np.array(severity, dtype=np.int8)]
    rec.log_likelihood = [np.where(np.array(severity) > 0, -5.0, 1.0)]
    rec.versions = versions
    rec.thresholds = [np.tile([-1.0, -3.0], (len(events), 1))]
    rec.t_s = [np.linspace(0, 30, len(events))]
    service = SimpleNamespace(metrics=ServiceMetrics(), scorer=SimpleNamespace(version="v2"))
    timeline = [
        {"t_s": 10.0, "kind": "shift", "what": "fleet operating point shifts"},
        {"t_s": 11.0, "kind": "drift", "what": "drift: psi test fired on model ...v1"},
        {"t_s": 18.0, "kind": "retrain", "what": "retrain promoted v2"},
        {"t_s": 20.0, "kind": "reload", "what": "service hot-reloaded model v2"},
    ]
    story = {
        "timeline": timeline,
        "wall0": 0.0,
        "first_version": "v1",
        "retrain": {"outcome": "promoted", "version": "v2", "reason": None, "figures": {}},
        "target_false_alert_rate": 0.01,
    }
    summary = summarize(
        events,
        [],
        Sent(positions, [0.01 * i for i in range(len(events))]),
        rec,
        [],
        service,  # type: ignore[arg-type]
        story,
        FleetSpec(),
        Drift(SHIFT_STEP),
    )
    return {**summary, "metrics_url": "http://127.0.0.1:1/metrics", "log_file": "/x/demo.log"}, rec


def test_false_alert_rate_is_split_at_the_shift_and_at_the_reloaded_model() -> None:
    # Given 1% alerts before the shift, 37% on the shifted fleet under v1, 1.2% under v2
    summary, _ = a_run(10, 370, 12)
    # Then each phase's rate and size are those, and the verdict names the promoted version
    assert summary["false_alert_rate_by_phase"] == {
        "before_shift": 0.01,
        "after_shift_before_reload": 0.37,
        "after_reload": 0.012,
    }
    assert set(summary["normal_events_by_phase"].values()) == {N_PER_PHASE}
    assert summary["reload"] == {"reloaded": True, "version": "v2", "t_s": 20.0}
    line = verdict(summary)
    assert "retrain promoted v2; the service reloaded it at 20.0s" in line
    assert "1.00% before the shift, 37.00% after the shift, before the reload, 1.20% after" in line


def test_the_html_report_shows_the_phases_and_keeps_names_on_one_line(tmp_path: Path) -> None:
    # Given a run's summary and timeline
    summary, rec = a_run(10, 370, 12)
    summary["scenarios"] = [
        {
            "name": "bearing_degradation",
            "entity": "pump-14",
            "description": "vibration ramps up slowly",
            "expect": "alert",
            "caught": True,
            "delay_s": 10.0,
            "t_start_s": 3.0,
            "t_end_s": 9.0,
        }
    ]
    # When the report is written
    demo_report(tmp_path / "r.html", summary, timeline_arrays(rec), {})
    html = (tmp_path / "r.html").read_text()
    # Then it shows the false alert rate per phase as the console does, with the target
    for label, rate in (
        ("before the shift", "1.00%"),
        ("after the shift, before the reload", "37.00%"),
        ("after the reload", "1.20%"),
    ):
        assert re.search(rf"<td>{label}</td><td>{re.escape(rate)}</td>", html), label
    assert "target 1.00%" in html and "service reloaded" in html
    # ...and entity names sit in cells that do not wrap
    assert "<span class='nowrap'>pump-14</span>" in html and ".nowrap{white-space:nowrap}" in html
