"""The live view's lines: one sign and one unit (log-likelihood against its threshold)."""

from __future__ import annotations

import io

from rich.console import Console

from detector.demo.live import PRINT_PER_S, LiveView, alert_line


def alert(severity: str = "warning", ll: float = -31.7, threshold: float = -14.2) -> dict:
    return {
        "severity": severity,
        "entity": "pump-03",
        "event_time": "2026-12-03T10:00:07.000Z",
        "log_likelihood": ll,
        "anomaly_score": -ll,
        "threshold": threshold,
        "top_features": [
            {"feature": "vibration_mm_s", "value": 2.123456, "contribution": 9.0},
            {"feature": "kind", "value": "pump", "contribution": 1.0},
            {"feature": "rpm", "value": 1500.0, "contribution": 0.5},
        ],
    }


def plain(markup: str) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(markup, soft_wrap=True)
    return out.getvalue()


def test_an_alert_line_speaks_in_log_likelihood_and_its_threshold() -> None:
    # Given a critical alert; When it is printed
    line = plain(alert_line(alert("critical", -31.7, -14.2)))
    # Then it reads as the log-likelihood below the threshold of its severity, never "score"
    assert "log-likelihood -31.70 < critical threshold -14.20" in line
    assert "score" not in line and "31.7 " not in line.replace("-31.7", "")
    # ...with the time of day and the two features that drove it most
    assert "pump-03 10:00:07" in line
    assert "vibration_mm_s=2.123, kind=pump" in line and "rpm" not in line


def test_alert_lines_beyond_the_rate_are_counted_not_printed() -> None:
    # Given a live view; When more alerts than PRINT_PER_S arrive within one second
    out = io.StringIO()
    view = LiveView(Console(file=out, width=200, color_system=None))
    for _ in range(PRINT_PER_S + 3):
        view.alert(alert())
    view._second = -1  # the next alert falls in a new second
    view.alert(alert())
    # Then PRINT_PER_S lines are printed, and the rest are announced as a count
    lines = out.getvalue().splitlines()
    assert sum("log-likelihood" in ln for ln in lines) == PRINT_PER_S + 1
    assert any("+3 more alerts in that second" in ln for ln in lines)
