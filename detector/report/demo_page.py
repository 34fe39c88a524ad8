"""The demo run's HTML page: its story, phases, scenarios and score timeline, one file."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from detector.report.html import Html, cell, img, page, pct, plt, table

# -- the page ---------------------------------------------------------------------------------
# Names of the false-alert-rate phases, as the console's summary says them.
DEMO_PHASES = {
    "before_shift": "before the shift",
    "after_shift_before_reload": "after the shift, before the reload",
    "after_reload": "after the reload",
    "after_shift": "after the shift (no new model)",
}
# Rows of the steps lane in the scores plot, top to bottom.
_STEP_KINDS = ("shift", "drift", "retrain", "reload")


def demo_report(
    path: Path,
    summary: dict[str, Any],
    timeline: dict[str, np.ndarray],
    contributions: dict[str, dict[str, float]],
) -> None:
    """``timeline``: arrays ``t_s``, ``log_likelihood``, ``severity``, ``threshold_warning``, ``threshold_critical``."""
    s = summary
    sections: list[tuple[str, str]] = [
        ("Summary", _demo_summary_table(s)),
        ("False alert rate", _demo_phase_table(s)),
        ("Injected scenarios", _demo_scenarios_table(s)),
        ("Scores over time", img(_demo_scores_figure(s, timeline), "scores over time")),
    ]
    if contributions:
        sections.append(
            (
                "Feature contributions of alerts",
                img(
                    _demo_contributions_figure(contributions), "per-feature contributions of alerts"
                ),
            )
        )
    steps = (
        table(
            ["#", "t (s)", "step"],
            [[k + 1, f"{e['t_s']:.1f}", e["what"]] for k, e in enumerate(s["timeline"])],
        )
        if s["timeline"]
        else "<p>No drift this run.</p>"
    )
    sections.append(("Drift and retraining", steps))
    dl = (
        table(["reason", "count"], sorted(s["dead_letters_by_reason"].items()))
        if s["dead_letters_by_reason"]
        else "<p>None.</p>"
    )
    sections.append(("Dead letters", dl))
    path.write_text(page("Detector demo run", sections, subtitle=s.get("started_at", "")))


def _nowrap(text: Any) -> Html:
    return Html(f"<span class='nowrap'>{html.escape(str(text))}</span>")


def _demo_summary_table(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    rows: list[list[Any]] = [
        ["events", f"{s['events']:,} ({s['scored']:,} scored, {s['dead_letters']:,} dead letters)"],
        ["alerts", ", ".join(f"{k}: {v:,}" for k, v in s["alerts_by_severity"].items())],
        [
            "false alert rate (normal events)",
            f"{pct(s['false_alert_rate'])} overall (target {pct(s['target_false_alert_rate'])})",
        ],
    ]
    rt = s.get("retrain")
    if rt:
        rows.append(
            [
                "retraining",
                Html(
                    _nowrap(rt["outcome"] + (f" {rt['version']}" if rt.get("version") else ""))
                    + (f": {html.escape(rt['reason'])}" if rt.get("reason") else "")
                ),
            ]
        )
        rl = s["reload"]
        rows.append(
            [
                "hot reload",
                Html(
                    f"<span>service reloaded {_nowrap(rl['version'])} at {rl['t_s']:.1f} s, "
                    "without a restart</span>"
                    if rl["reloaded"] and rl["t_s"] is not None
                    else f"<span>not reloaded: the service still runs {_nowrap(rl['version'])}</span>"
                ),
            ]
        )
    rows += [
        [
            "produce -> alert latency",
            "-"
            if lat["p50"] is None
            else f"p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms over {lat['alerts_measured']:,} alerts",
        ],
        ["metrics endpoint", _nowrap(s["metrics_url"])],
        ["log file", _nowrap(s.get("log_file", "-"))],
    ]
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{cell(v)}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{body}</table>"


def _demo_phase_table(s: dict[str, Any]) -> str:
    phases = s.get("false_alert_rate_by_phase") or {}
    if not phases:
        return "<p>No fleet-wide shift this run: one phase, see the summary.</p>"
    counts = s.get("normal_events_by_phase") or {}
    rows = [
        [DEMO_PHASES.get(name, name), pct(rate), f"{counts.get(name, 0):,}"]
        for name, rate in phases.items()
    ]
    note = (
        "<p class='muted'>Share of normal events (no injected fault) that alerted, at warning "
        f"or above; the model's target is {pct(s['target_false_alert_rate'])}. Phases split at "
        "the shift's first step and at the first event the reloaded model scored.</p>"
    )
    rates = table(["phase", "false alert rate", "normal events"], rows)
    return rates.replace("<table>", "<table class='num'>", 1) + note


def _demo_scenarios_table(s: dict[str, Any]) -> str:
    rows = [
        [
            _nowrap(sc["name"]),
            _nowrap(sc["entity"]),
            sc["description"],
            _nowrap(sc["expect"]),
            Html("<span class='ok'>caught</span>")
            if sc["caught"]
            else (
                Html("<span class='bad'>missed</span>")
                if sc["expect"] != "scored"
                else Html("<span class='muted'>scored</span>")
            ),
            "-" if sc["delay_s"] is None else f"{sc['delay_s']:.0f} s",
        ]
        for sc in s["scenarios"]
    ]
    return table(["scenario", "entity", "what", "expected", "result", "delay (simulated)"], rows)


def _demo_scores_figure(s: dict[str, Any], timeline: dict[str, np.ndarray]) -> Figure:
    """Three lanes sharing the time axis: scenarios, story steps, then the scores.

    Each scenario and each kind of step has a row of its own, named on the y axis, so no
    label ever sits on another; step numbers in one row alternate above and below it.
    """
    scen = [sc for sc in s["scenarios"] if sc.get("t_start_s") is not None]
    kinds = [k for k in _STEP_KINDS if any(e.get("kind") == k for e in s["timeline"])]
    fig, (ax_sc, ax_st, ax) = plt.subplots(
        3,
        1,
        sharex=True,
        figsize=(12, 1.6 + 0.28 * (len(scen) + len(kinds)) + 4.2),
        gridspec_kw={"height_ratios": [max(1, len(scen)) * 0.3, max(1, len(kinds)) * 0.3, 4.2]},
    )
    for row, sc in enumerate(scen):
        width = max(sc["t_end_s"] - sc["t_start_s"], 0.3)
        ax_sc.barh(row, width, left=sc["t_start_s"], height=0.6, color="#f0c000", alpha=0.8)
    ax_sc.set_yticks(
        range(len(scen)), [f"{sc['name']} ({sc['entity']})" for sc in scen], fontsize=8
    )
    ax_sc.set_ylim(len(scen) - 0.4, -0.6)
    ax_sc.set_title(
        "Injected scenarios (yellow), steps of the story (numbered as in the table below), scores"
    )
    for k, ev in enumerate(s["timeline"]):
        if ev.get("kind") not in kinds:
            continue
        row = kinds.index(ev["kind"])
        same_row_before = [e for e in s["timeline"][:k] if e.get("kind") == ev["kind"]]
        up = len(same_row_before) % 2 == 0
        ax_st.plot(ev["t_s"], row, marker="o", ms=4, c="#555")
        ax_st.annotate(
            str(k + 1),
            (ev["t_s"], row),
            xytext=(0, -9 if up else 3),
            textcoords="offset points",
            ha="center",
            fontsize=7,
            color="#222",
        )
        ax.axvline(ev["t_s"], c="#999", ls=":", lw=0.8)
    ax_st.set_yticks(range(len(kinds)), kinds, fontsize=8)
    ax_st.set_ylim(len(kinds) - 0.3, -0.8)
    for a in (ax_sc, ax_st):
        a.tick_params(axis="x", bottom=False)
        a.grid(axis="x", color="#eee")
        for side in ("top", "right"):
            a.spines[side].set_visible(False)
    t = timeline["t_s"]
    raw = timeline["log_likelihood"]
    # Clip 25 below the warning threshold: a fault scoring -500 (or a retrained model's
    # critical threshold, calibrated on a small window's extreme tail) would squash the band
    # where normal events, thresholds and the drift live. Clipped values sit on the bottom.
    floor = float(np.nanmin(timeline["threshold_warning"])) - 25 if t.size else -50.0
    normal = timeline["severity"] == 0
    ax.scatter(t[normal], np.maximum(raw[normal], floor), s=2, c="#8aa", alpha=0.4, label="scored")
    ax.scatter(t[~normal], np.maximum(raw[~normal], floor), s=6, c="#c33", alpha=0.6, label="alert")
    for name, color in (("warning", "orange"), ("critical", "red")):
        thr = timeline[f"threshold_{name}"]
        ax.plot(t, np.maximum(thr, floor), c=color, lw=1.2, label=f"{name} threshold")
    ax.set_ylim(floor - 2, float(np.nanpercentile(raw, 99.9)) + 3 if t.size else 10)
    ax.set(
        xlabel="seconds since the stream started",
        ylabel=f"log-likelihood\n(higher = more normal; clipped at {floor:.0f})",
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, markerscale=3)
    fig.align_ylabels()
    return fig


def _demo_contributions_figure(contributions: dict[str, dict[str, float]]) -> Figure:
    names = sorted({f for c in contributions.values() for f in c})
    scen = list(contributions)
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(scen) + 1.5))
    left = np.zeros(len(scen))
    totals = np.array([sum(max(0.0, v) for v in contributions[n].values()) or 1.0 for n in scen])
    for f in names:
        vals = np.array([max(0.0, contributions[n].get(f, 0.0)) for n in scen]) / totals
        ax.barh(scen, vals, left=left, label=f)
        left += vals
    ax.set(
        xlabel="share of the top features' squared Mahalanobis terms",
        xlim=(0, 1),
        title="What drove the alerts, per scenario",
    )
    ax.legend(fontsize=8, ncol=3, loc="lower right")
    return fig
