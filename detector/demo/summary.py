"""What the demo saw, for the summary: every scored row's outcome, rolled up per phase.

``Recorder`` is a batch observer of the service (each scored row, its log-likelihood,
severity and the model version that scored it); ``summarize`` joins that with what was
sent and what the story did (shift, drift, retrain, reload) into the summary dict that
the console, ``summary.json`` and the HTML report show.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from detector.demo.fleet import Drift, FleetSpec, LabelledEvent, Scenario
from detector.stream.service import DetectorService, ScoredBatch

# Events scored within this long after a fault's last step still count as that fault's
# (a bearing that just recovered, a stuck sensor's first free readings), in steps.
FAULT_TAIL_STEPS = 5


@dataclass
class Recorder:
    """A batch observer that keeps every scored row's outcome for the summary and plots."""

    t0: float = field(default_factory=time.monotonic)
    position: list[tuple[int, int]] = field(default_factory=list)
    log_likelihood: list[np.ndarray] = field(default_factory=list)
    severity: list[np.ndarray] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # one per scored row
    thresholds: list[np.ndarray] = field(default_factory=list)
    t_s: list[np.ndarray] = field(default_factory=list)
    contributions: list[tuple[tuple[int, int], dict[str, float]]] = field(default_factory=list)
    dead: list[tuple[int, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (warning, critical) log-likelihood thresholds of the model in use, for the plot.
    current_thresholds: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))

    def __call__(self, sb: ScoredBatch, producer: Any) -> list[Any]:
        now = time.monotonic() - self.t0
        r = sb.result
        b = sb.batch
        pos = [(b.partitions[i], b.offsets[i]) for i in sb.scored_index]
        thr = np.full((len(pos), 2), np.nan)
        with self.lock:
            self.position.extend(pos)
            self.log_likelihood.append(r.log_likelihood.copy())
            self.severity.append(r.severity.copy())
            self.versions.extend([sb.model_version] * len(pos))
            thr[:] = self.current_thresholds
            self.thresholds.append(thr)
            self.t_s.append(np.full(len(pos), now))
            for row, contribs in r.top_features.items():
                self.contributions.append((pos[row], {c.feature: c.contribution for c in contribs}))
            for p, reason, _ in sb.dead_letters:
                self.dead.append((b.partitions[p], b.offsets[p], reason))
        return []


@dataclass
class Sent:
    """Where each event landed (partition, offset) and when it was sent (wall clock, s)."""

    positions: list[tuple[int, int]]
    sent_at: list[float]


def _rate(alerting: np.ndarray, mask: np.ndarray) -> tuple[float | None, int]:
    n = int(mask.sum())
    return (float(alerting[mask].mean()) if n else None), n


def summarize(
    events: list[LabelledEvent],
    scenarios: list[Scenario],
    sent: Sent,
    recorder: Recorder,
    alerts: list[tuple[float, dict[str, Any]]],
    service: DetectorService,
    story: dict[str, Any],
    spec: FleetSpec,
    drift: Drift | None,
) -> dict[str, Any]:
    """``story``: ``timeline`` (steps), ``wall0`` (s), ``first_version``, ``retrain``."""
    index = {pos: i for i, pos in enumerate(sent.positions)}
    sev = np.concatenate(recorder.severity) if recorder.severity else np.zeros(0, dtype=np.int8)
    by_event = np.zeros(len(events), dtype=np.int8)
    scored = np.zeros(len(events), dtype=bool)
    version = np.full(len(events), "", dtype=object)
    for p, s, v in zip(recorder.position, sev, recorder.versions, strict=True):
        r = index.get(p, -1)
        if r >= 0:
            by_event[r] = max(by_event[r], s)
            scored[r] = True
            version[r] = v
    alerting = by_event > 0
    dead_pos = {index.get((p, o), -1) for p, o, _ in recorder.dead}
    t_ev = np.array(sent.sent_at) - story["wall0"]  # when each event was sent, on the timeline
    steps = np.array([e.step for e in events])
    out_scen = [
        _scenario_outcome(sc, events, steps, t_ev, by_event, scored, dead_pos, spec)
        for sc in scenarios
    ]
    normal = np.array([e.scenario is None for e in events]) & scored
    phases: dict[str, float | None] = {}
    phase_n: dict[str, int] = {}
    retrain = story.get("retrain") or {}
    promoted = retrain.get("outcome") == "promoted" and retrain.get("version")
    reloaded = bool(promoted) and bool((version == retrain["version"]).any())
    if drift is not None:
        shifted = steps >= drift.start_step
        parts = {"before_shift": normal & ~shifted}
        if reloaded:
            parts["after_shift_before_reload"] = normal & shifted & (version != retrain["version"])
            parts["after_reload"] = normal & (version == retrain["version"])
        else:
            parts["after_shift"] = normal & shifted
        for name, mask in parts.items():
            phases[name], phase_n[name] = _rate(alerting, mask)
    lat = []
    sent_by_pos = {pos: sent.sent_at[i] for i, pos in enumerate(sent.positions)}
    for received, a in alerts:
        src = a["source"]
        t_sent = sent_by_pos.get((src["partition"], src["offset"]))
        if t_sent is not None:
            lat.append(1000.0 * (received - t_sent))
    counts = service.metrics.counts()
    final_version = service.scorer.version if service.scorer else None
    return {
        "events": len(events),
        "scored": counts.scored,
        "dead_letters": counts.dead_lettered,
        "consumed": counts.consumed,
        "alerts_by_severity": {
            s: counts.alerts_by_severity.get(s, 0) for s in ("warning", "critical")
        },
        "target_false_alert_rate": story["target_false_alert_rate"],
        "false_alert_rate": _rate(alerting, normal)[0],
        "false_alert_rate_by_phase": phases,
        "normal_events_by_phase": phase_n,
        "scenarios": out_scen,
        "dead_letters_by_reason": dict(Counter(reason for _, _, reason in recorder.dead)),
        "latency_ms": {
            "alerts_measured": len(lat),
            "p50": float(np.percentile(lat, 50)) if lat else None,
            "p99": float(np.percentile(lat, 99)) if lat else None,
            "max": float(np.max(lat)) if lat else None,
        },
        "first_version": story["first_version"],
        "retrain": retrain or None,
        "reload": {
            "reloaded": reloaded,
            "version": final_version,
            "t_s": next(
                (s["t_s"] for s in story["timeline"] if s["kind"] == "reload"),
                None,
            ),
        },
        "timeline": story["timeline"],
        "model_versions": sorted({a["model_version"] for _, a in alerts}),
    }


def _scenario_outcome(
    sc: Scenario,
    events: list[LabelledEvent],
    steps: np.ndarray,
    t_ev: np.ndarray,
    by_event: np.ndarray,
    scored: np.ndarray,
    dead_pos: set[int],
    spec: FleetSpec,
) -> dict[str, Any]:
    tail = max(FAULT_TAIL_STEPS, sc.duration_steps // 2)
    idx = [
        i
        for i, e in enumerate(events)
        if e.entity == sc.entity and sc.start_step <= e.step < sc.end_step + tail
    ]
    first = None
    if sc.expect == "dead_letter":
        mal = [i for i, e in enumerate(events) if e.scenario == "malformed"]
        caught = len(mal) > 0 and all(i in dead_pos or not scored[i] for i in mal)
    elif sc.expect == "alert":
        alerting = [i for i in idx if by_event[i] > 0]
        caught = bool(alerting)
        first = min((events[i].step for i in alerting), default=None)
    else:
        caught = all(scored[i] for i in idx if events[i].scenario == sc.name)
    window = np.flatnonzero(
        (steps >= sc.start_step) & (steps < max(sc.end_step, sc.start_step + 1))
    )
    return {
        "name": sc.name,
        "entity": sc.entity,
        "description": sc.description,
        "expect": sc.expect,
        "start_step": sc.start_step,
        "end_step": sc.end_step,
        "caught": caught,
        "delay_s": None if first is None else max(0.0, (first - sc.start_step) * spec.interval_s),
        "t_start_s": float(t_ev[window[0]]) if window.size else None,
        "t_end_s": float(t_ev[window[-1]]) if window.size else None,
    }


def timeline_arrays(rec: Recorder) -> dict[str, np.ndarray]:
    """Per scored row: time on the timeline, log-likelihood, severity, thresholds in use."""
    if not rec.log_likelihood:
        empty = np.zeros(0)
        return {
            "t_s": empty,
            "log_likelihood": empty,
            "severity": empty,
            "threshold_warning": empty,
            "threshold_critical": empty,
        }
    thr = np.concatenate(rec.thresholds)
    ll = np.concatenate(rec.log_likelihood)
    ok = np.isfinite(ll)
    return {
        "t_s": np.concatenate(rec.t_s)[ok],
        "log_likelihood": ll[ok],
        "severity": np.concatenate(rec.severity)[ok],
        "threshold_warning": thr[ok, 0],
        "threshold_critical": thr[ok, -1],
    }


def contributions_by_scenario(
    rec: Recorder, positions: list[tuple[int, int]], events: list[LabelledEvent]
) -> dict[str, dict[str, float]]:
    """Mean per-feature contribution of the alerts of each scenario (and of normal rows)."""
    index = {pos: i for i, pos in enumerate(positions)}
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    counts: Counter[str] = Counter()
    for pos, contribs in rec.contributions:
        i = index.get(pos)
        if i is None:
            continue
        name = events[i].scenario or "normal (false alerts / drift)"
        counts[name] += 1
        for f, v in contribs.items():
            sums[name][f] += v
    return {name: {f: v / counts[name] for f, v in s.items()} for name, s in sums.items()}


PHASE_LABELS = {
    "before_shift": "before the shift",
    "after_shift_before_reload": "after the shift, before the reload",
    "after_reload": "after the reload",
    "after_shift": "after the shift (no new model)",
}


def print_summary(console: Console, s: dict[str, Any]) -> None:
    """The tables the console shows at the end (the HTML report shows the same figures)."""
    t = Table(title="demo summary", show_header=False)
    t.add_column("", no_wrap=True)
    t.add_column("", overflow="fold")
    t.add_row(
        "events", f"{s['events']:,} ({s['scored']:,} scored, {s['dead_letters']} dead letters)"
    )
    t.add_row("alerts", ", ".join(f"{k}: {v}" for k, v in s["alerts_by_severity"].items()))
    fr = s["false_alert_rate"]
    target = s["target_false_alert_rate"]
    t.add_row(
        "false alert rate (normal events)",
        ("-" if fr is None else f"{100 * fr:.2f}% overall") + f" (target {100 * target:.2f}%)",
    )
    for phase, v in s["false_alert_rate_by_phase"].items():
        n = s["normal_events_by_phase"].get(phase, 0)
        t.add_row(
            f"  {PHASE_LABELS.get(phase, phase)}",
            "-" if v is None else f"{100 * v:.2f}% of {n:,}",
        )
    rt = s.get("retrain")
    if rt:
        t.add_row("retraining", retrain_line(rt))
        rl = s["reload"]
        t.add_row(
            "hot reload",
            f"service reloaded {rl['version']} at {rl['t_s']:.1f}s, without a restart"
            if rl["reloaded"] and rl["t_s"] is not None
            else f"not reloaded: the service still runs {rl['version']}",
        )
    t.add_row(
        "dead letters by reason",
        ", ".join(f"{k}: {v}" for k, v in sorted(s["dead_letters_by_reason"].items())) or "-",
    )
    lat = s["latency_ms"]
    t.add_row(
        "produce -> alert latency",
        "-"
        if lat["p50"] is None
        else f"p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms over {lat['alerts_measured']} alerts",
    )
    t.add_row("metrics endpoint", s["metrics_url"])
    t.add_row("log file", s["log_file"])
    console.print(t)
    st = Table(title="injected scenarios")
    for col in ("scenario", "entity", "expected", "result", "delay (simulated)"):
        st.add_column(col, no_wrap=True)
    for sc in s["scenarios"]:
        result = (
            ("[green]caught[/]" if sc["caught"] else "[red]missed[/]")
            if sc["expect"] != "scored"
            else ("[green]scored[/]" if sc["caught"] else "[red]not scored[/]")
        )
        st.add_row(
            sc["name"],
            sc["entity"],
            sc["expect"],
            result,
            "-" if sc["delay_s"] is None else f"{sc['delay_s']:.0f} s",
        )
    console.print(st)
    if s["timeline"]:
        tl = Table(title="drift and retraining")
        tl.add_column("t", no_wrap=True)
        tl.add_column("step")
        for e in s["timeline"]:
            tl.add_row(f"{e['t_s']:.1f}s", e["what"])
        console.print(tl)
    line = verdict(s)
    if line:
        console.print(line, soft_wrap=True)


def verdict(s: dict[str, Any]) -> str:
    """The drift story in one line: retrain outcome, reload, false alert rate per phase."""
    rt = s.get("retrain")
    phases = s["false_alert_rate_by_phase"]
    if not phases:
        return ""
    rates = ", ".join(
        f"{'-' if v is None else f'{100 * v:.2f}%'} {PHASE_LABELS.get(k, k)}"
        for k, v in phases.items()
    )
    rl = s["reload"]
    if not rt:
        story = "no retrain ran"
    elif rl["reloaded"]:
        story = f"retrain promoted {rt['version']}; the service reloaded it at {rl['t_s']:.1f}s"
    else:
        story = f"retrain {rt['outcome']}{': ' + rt['reason'] if rt.get('reason') else ''}"
    target = 100 * s["target_false_alert_rate"]
    return f"[bold]{story}. False alert rate {rates} (target {target:.2f}%).[/]"


def retrain_line(rt: dict[str, Any]) -> str:
    """``promoted v-...`` with the holdout alert rate, or the outcome and its reason."""
    v = (rt.get("figures") or {}).get("validation", {})
    return (
        f"{rt['outcome']}{' ' + str(rt['version']) if rt.get('version') else ''}"
        + (f": {rt['reason']}" if rt.get("reason") else "")
        + (
            f" (holdout alert rate {100 * v['candidate_alert_rate']:.2f}%)"
            if "candidate_alert_rate" in v
            else ""
        )
    )
