"""The backtest's HTML page: the figures, scores over time, alert rate against the target.

Built from the pieces of ``detector.report.html`` (one self-contained file, plots as PNG
data URIs). The x axis is event time, or the row in the stream when the windows hold
equal row counts (a recording with long pauses, whose time axis would show the pauses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from detector.backtest.driver import Result
from detector.report.html import img, page, pct, plt, table

# Points drawn in the scores plot at most: beyond it a seeded subsample (alerts all kept).
MAX_POINTS = 40_000
_OUTCOME_COLOURS = {"promoted": "green", "rejected": "orange", "refused": "grey", "failed": "red"}


def _x(result: Result) -> tuple[np.ndarray, str, Any]:
    """The x of each row, its label, and a function event-time ms -> x."""
    times = result.streamed.times_ms.astype(float)
    if result.summary["window_by"] == "rows":

        def at_rows(ms: float) -> float:
            return float(np.searchsorted(times, ms, side="left"))

        return np.arange(times.size, dtype=float), "row in the stream (event-time order)", at_rows
    t0 = times[0]

    def at_hours(ms: float) -> float:
        return (ms - t0) / 3_600_000.0

    return (times - t0) / 3_600_000.0, "hours of event time since the stream started", at_hours


def _scores_figure(result: Result) -> Figure:
    r, s = result.replay, result.summary
    x, label, at = _x(result)
    ll = r.log_likelihood
    ok = np.isfinite(ll)
    keep = ok.copy()
    if ok.sum() > MAX_POINTS:
        rng = np.random.default_rng(0)
        keep &= (rng.random(ll.size) < MAX_POINTS / ok.sum()) | (r.severity > 0)
    fig, ax = plt.subplots(figsize=(12, 5))
    for w in s.get("anomaly_windows", []):
        ax.axvspan(at(w["start_ms"]), at(w["end_ms"]) + 1e-9, color="#f0c000", alpha=0.25, lw=0)
    # Clipped 25 below the lowest warning threshold: a fault at -500, or a retrained model's
    # critical threshold calibrated on a small window's extreme tail, would squash the band
    # where normal scores and the thresholds live (as in the demo's page).
    floor = float(min(b["threshold_warning"] for b in r.batches)) - 25.0
    flagged = r.severity > 0
    ax.scatter(x[keep & ~flagged], np.maximum(ll[keep & ~flagged], floor), s=2, c="#8aa", alpha=0.4)
    ax.scatter(x[keep & flagged], np.maximum(ll[keep & flagged], floor), s=4, c="#c33", alpha=0.5)
    starts = [b["first_row"] for b in r.batches]
    bx = x[np.asarray(starts, dtype=int)]
    for name, colour in (("warning", "orange"), ("critical", "red")):
        thr = [b[f"threshold_{name}"] for b in r.batches]
        ax.step(
            bx, np.maximum(thr, floor), where="post", c=colour, lw=1.2, label=f"{name} threshold"
        )
    for rt in s["retrains"]:
        ax.axvline(
            at(rt["event_time_ms"]), c=_OUTCOME_COLOURS.get(rt["outcome"], "k"), ls=":", lw=1
        )
    for rl in s["reloads"]:
        ax.axvline(at(rl["event_time_ms"]), c="green", lw=1.5)
    ax.plot(
        [], [], c="grey", ls=":", label="retrain (green promoted, orange rejected, grey refused)"
    )
    ax.plot([], [], c="green", lw=1.5, label="reload")
    ax.fill_between([], [], color="#f0c000", alpha=0.25, label="labelled anomaly window")
    ax.scatter([], [], s=6, c="#c33", label="flagged (warning or above)")
    top = float(np.nanpercentile(ll[ok], 99.9)) + 3 if ok.any() else 10.0
    ax.set_ylim(floor - 2, top)
    ax.set(xlabel=label, ylabel=f"log-likelihood (clipped at {floor:.0f})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return fig


def _rate_figure(result: Result) -> Figure:
    s = result.summary
    _, label, at = _x(result)
    windows = s["windows"]
    key = "alert_rate_normal" if s["stream"]["labelled"] else "alert_rate"
    fig, ax = plt.subplots(figsize=(12, 3.6))
    for w in windows:
        v = w.get(key)
        if v is None:
            continue
        ax.hlines(100 * v, at(w["start_ms"]), at(w["end_ms"]), colors="#36c", lw=3)
    ax.axhline(100 * s["overall"]["target_alert_rate"], c="k", ls="--", label="target")
    ax.plot([], [], c="#36c", lw=3, label="per window")
    what = "normal rows" if key == "alert_rate_normal" else "all rows (unlabelled)"
    ax.set(xlabel=label, ylabel=f"alert rate on {what} (%)")
    ax.legend(fontsize=8)
    return fig


def _summary_rows(s: dict[str, Any]) -> list[list[Any]]:
    o, st = s["overall"], s["stream"]
    rows: list[list[Any]] = [
        ["stream", f"{o['rows']:,} rows, {st['first_event_time']} .. {st['last_event_time']}"],
        ["time column", st["time_column"] or "none (rows a second apart, file order)"],
        ["first model", s["first_model"]["version"]],
        [
            "alerts",
            f"{o['alerts']:,} ({', '.join(f'{k} {v:,}' for k, v in o['alerts_by_severity'].items())})",
        ],
        ["dead letters", f"{o['dead_letters']:,}"],
        [
            "alert rate (all rows)",
            f"{pct(o['alert_rate'])} (target on normal rows {pct(o['target_alert_rate'])})",
        ],
    ]
    if st["labelled"]:
        auroc = "-" if o["auroc"] is None else f"{o['auroc']:.4f}"
        auprc = "-" if o["auprc"] is None else f"{o['auprc']:.4f}"
        d = s["detection_delay"]
        rows += [
            ["alert rate on normal rows", pct(o["alert_rate_normal"])],
            ["AUROC / AUPRC", f"{auroc} / {auprc}"],
            ["recall (alerted)", pct(o["recall_alerted"])],
            [
                "labelled anomaly windows",
                f"{d['detected']} of {d['windows']} detected; median delay "
                + ("-" if d["delay_s_median"] is None else f"{d['delay_s_median']:.0f} s"),
            ],
        ]
    outcomes = ", ".join(f"{k} {v}" for k, v in s["retrain_outcomes"].items()) or "none"
    rows += [
        ["drift events", len(s["drift_events"])],
        ["retrains", outcomes],
        ["reloads", len(s["reloads"])],
    ]
    return rows


def backtest_report(path: Path, result: Result) -> None:
    s = result.summary
    labelled = s["stream"]["labelled"]
    win_head = ["#", "start", "end", "rows", "alert rate"]
    if labelled:
        win_head += ["normal", "anomalous", "alert rate on normal", "AUROC", "recall"]
    win_rows = []
    for w in s["windows"]:
        row = [w["window"], w["start"], w["end"], f"{w['rows']:,}", pct(w["alert_rate"])]
        if labelled:
            auroc = w.get("auroc")
            row += [
                w.get("normal", "-"),
                w.get("anomalous", "-"),
                pct(w.get("alert_rate_normal")),
                "-" if auroc is None else f"{auroc:.3f}",
                pct(w.get("recall_warning")),
            ]
        win_rows.append(row)
    sections = [
        ("Summary", table(["", ""], _summary_rows(s))),
        ("Scores over time", img(_scores_figure(result), "scores over time")),
        ("Alert rate over time", img(_rate_figure(result), "alert rate over time")),
        (f"Windows (equal {s['window_by']})", table(win_head, win_rows)),
        (
            "Drift events",
            table(
                [
                    "event time",
                    "test",
                    "model",
                    "starts a retrain",
                    "alert rate",
                    "mean LL z",
                    "most shifted",
                ],
                [
                    [
                        d["event_time"],
                        d["test"],
                        d["model_version"],
                        "yes" if d["triggers_retrain"] else "no",
                        pct(d["alert_rate"]),
                        f"{d['mean_log_likelihood_z']:.1f}",
                        d["most_shifted_feature"] or "-",
                    ]
                    for d in s["drift_events"]
                ],
            )
            if s["drift_events"]
            else "<p>None.</p>",
        ),
        (
            "Retrains and reloads",
            table(
                ["event time", "trigger", "outcome", "version", "window rows", "why"],
                [
                    [
                        r["event_time"],
                        r["trigger"],
                        r["outcome"],
                        r["version"] or "-",
                        r["window_rows"],
                        r["reason"] or "",
                    ]
                    for r in s["retrains"]
                ]
                + [
                    [
                        r["event_time"],
                        "promotion",
                        f"reload {r['outcome']}",
                        r["version"],
                        "",
                        r.get("reason") or "",
                    ]
                    for r in s["reloads"]
                ],
            )
            if s["retrains"]
            else "<p>No retraining (none scheduled).</p>",
        ),
    ]
    if labelled:
        ws = s["anomaly_windows"][:300]
        sections.append(
            (
                "Labelled anomaly windows",
                table(
                    ["entity", "start", "rows", "detected", "delay (s)", "delay (rows)"],
                    [
                        [
                            w["entity"] or "-",
                            w["start"],
                            w["rows"],
                            "yes" if w["detected"] else "missed",
                            "-" if w["delay_s"] is None else f"{w['delay_s']:.0f}",
                            "-" if w["delay_rows"] is None else w["delay_rows"],
                        ]
                        for w in ws
                    ],
                ),
            )
        )
    path.write_text(page("Backtest", sections, subtitle=f"{s['overall']['rows']:,} streamed rows"))
