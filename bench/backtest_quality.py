"""The backtest beside the frozen evaluation, for `make bench-quality` (``bench.quality``).

Frozen: the model trained on train.csv scores all of test.csv at once (``detector
evaluate``). Backtest: the same model, test.csv streamed in event-time order through the
service's pipeline with the retraining job on the event-time clock, today's defaults
(``retrain --every 1h --on-drift``, as deploy/ runs it). Plus the synthetic drifting
fleet (``detector.backtest.synthetic``), trained on its first 30% both ways.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from detector.backtest.driver import (
    DEFAULT_TRAIN_FRACTION,
    Split,
    run_backtest,
    stream_pace,
    train_first,
)
from detector.backtest.run import Plan
from detector.backtest.source import Stream, read_stream
from detector.backtest.synthetic import FEATURES, FleetShape, write_fleet_csv
from detector.features.temporal import augment_offline
from detector.model.bundle import ModelBundle
from detector.model.choose import level_invariant
from detector.model.evaluate import quality
from detector.model.scorer import Scorer
from detector.settings import Settings


def plan_of(settings: Settings) -> Plan:
    return Plan(
        batch_rows=settings.kafka.max_poll_records,
        topic=settings.kafka.input_topic,
        retrain_every_s=3600.0,
        retrain_on_drift=True,
    )


def paced(settings: Settings, stream: Stream) -> Settings:
    """drift.sample_rate raised to what fills the retrain window in its age (retrain.pace)."""
    rate = max(settings.drift.sample_rate, stream_pace(stream, settings).filling_sample_rate)
    return settings.model_copy(
        update={"drift": settings.drift.model_copy(update={"sample_rate": rate})}
    )


def _frozen(stream: Stream, bundle: ModelBundle, settings: Settings) -> dict[str, Any]:
    scorer = Scorer(bundle, settings.features, settings.thresholds)
    assert stream.labels is not None
    rows = stream.rows
    plan = bundle.spec.temporal_plan
    if plan:  # as `detector evaluate` does: the file's rows per entity in time order
        rows, _ = augment_offline(rows, stream.entities, stream.times_ms.tolist(), plan)
    q = quality(scorer.score(rows), stream.labels)
    warning = q["per_severity"][scorer.thresholds.names[0]]
    return {
        "auroc": q["auroc"],
        "alert_rate_normal": warning["alert_rate_normal"],
        "recall": warning["recall_anomalous"],
    }


def quiet_logs() -> None:
    """Drift lines go to the report, not the console (one per drift event otherwise)."""
    logging.getLogger("detector").setLevel(logging.ERROR)


def compare(
    name: str, stream: Stream, bundle: ModelBundle, settings: Settings, windows: int = 10
) -> dict[str, Any]:
    """Frozen figures and backtest figures for one labelled stream."""
    quiet_logs()
    frozen = _frozen(stream, bundle, settings)
    started = time.perf_counter()
    result = run_backtest(stream, settings, plan_of(settings), windows=windows, model=bundle)
    took = time.perf_counter() - started
    s = result.summary
    o = s["overall"]
    rates = [w["alert_rate_normal"] for w in s["windows"] if w.get("alert_rate_normal") is not None]
    # The acceptance's windows: those that start after the first promoted retrain.
    promoted = [r["event_time_ms"] for r in s["retrains"] if r["outcome"] == "promoted"]
    after = [
        w["alert_rate_normal"]
        for w in s["windows"]
        if promoted and w["start_ms"] >= promoted[0] and w.get("alert_rate_normal") is not None
    ]
    d = s["detection_delay"]
    return {
        "dataset": name,
        "sample_rate": settings.drift.sample_rate,
        "rows": len(stream),
        "frozen": frozen,
        "backtest": {
            "auroc": o["auroc"],
            "alert_rate_normal": o["alert_rate_normal"],
            "recall": o["recall_alerted"],
            "window_alert_rate_normal_min": min(rates) if rates else None,
            "window_alert_rate_normal_max": max(rates) if rates else None,
            "window_by": s["window_by"],
            "windows_after_first_retrain": len(after),
            "window_alert_rate_normal_max_after_first_retrain": max(after) if after else None,
            "windows": s["windows"],
            "anomaly_windows": d["windows"],
            "detected_windows": d["detected"],
            "delay_s_median": d["delay_s_median"],
            "drift_events": len(s["drift_events"]),
            "retrains": s["retrain_outcomes"],
            "retrain_reasons": sorted(
                {_why(r) for r in s["retrains"] if r["outcome"] != "promoted"}
            ),
            "reloads": len(s["reloads"]),
            "seconds": took,
        },
    }


def _why(retrain: dict[str, Any]) -> str:
    """A refusal's code, or which check of the gate rejected the candidate."""
    if retrain["refusal"]:
        return str(retrain["refusal"])
    reason = retrain["reason"] or ""
    if "alert rate" in reason:
        return "gate: holdout alert rate"
    if "log-likelihood" in reason:
        return "gate: trails the current model"
    return reason[:60]


def run_shared(folder: Path, settings: Settings, bundle: ModelBundle) -> list[dict[str, Any]]:
    """Defaults, the paced sampling rate, and (for a time series) the level-invariant forms."""
    stream = read_stream(folder / "test.csv", settings, "label")
    rate = paced(settings, stream)
    out = [
        compare(folder.name, stream, bundle, settings),
        compare(f"{folder.name}, paced", stream, bundle, rate),
    ]
    if stream.time_column is None:  # tabular: no series for temporal forms
        return out
    numeric = [f for f in bundle.spec.numeric if f not in bundle.spec.temporal_plan.windows]
    inv = level_invariant(rate, numeric)
    train_part = read_stream(folder / "train.csv", inv, "label")
    inv_bundle = train_first(inv, train_part)
    out.append(compare(f"{folder.name}, level-invariant, paced", stream, inv_bundle, inv))
    return out


def run_synthetic(settings: Settings) -> list[dict[str, Any]]:
    """The fleet at today's defaults, and with a sampled window large enough to retrain."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fleet.csv"
        write_fleet_csv(path, FleetShape())
        stream = read_stream(path, settings, "label")
    k = Split(fraction=DEFAULT_TRAIN_FRACTION).index(stream)
    bundle = train_first(settings, stream.part(0, k))
    rest = stream.part(k, len(stream))
    # At 1% sampling 48k events give ~480 samples, under retrain.min_samples (1000):
    # retrain.pace's rate fills the window; then the level-invariant forms at that rate.
    rate = paced(settings, rest)
    inv = level_invariant(rate, list(FEATURES))
    inv_bundle = train_first(inv, stream.part(0, k))
    # ...and those forms relative to the other machines (features.temporal_peer).
    peer = level_invariant(rate, list(FEATURES), peer=True)
    peer_bundle = train_first(peer, stream.part(0, k))
    return [
        compare("synthetic fleet", rest, bundle, settings),
        compare("synthetic fleet, paced", rest, bundle, rate),
        compare("synthetic fleet, level-invariant, paced", rest, inv_bundle, inv),
        compare("synthetic fleet, level-invariant against peers, paced", rest, peer_bundle, peer),
    ]


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    def pct(v: float | None) -> str:
        return "-" if v is None or np.isnan(v) else f"{100 * v:.2f}%"

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [
        "## Backtest beside the frozen evaluation",
        "",
        "Frozen: the train.csv model scores test.csv at once (`detector evaluate`). Backtest: the same "
        "model, test.csv streamed in event-time order through the service's pipeline with retraining "
        "on the event-time clock at today's defaults (`--retrain-every 1h`, on drift). The synthetic "
        "fleet trains on its first 30%. Alert rate on normal rows at the warning level (target 1%).",
        "",
        "| data set | sample rate | AUROC frozen / backtest | alert rate on normal frozen / backtest | per-window range | worst window after the first retrain | recall frozen / backtest | anomaly windows detected | median delay | drift events | retrains | reloads |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        f, b = r["frozen"], r["backtest"]
        retrains = ", ".join(f"{k} {v}" for k, v in b["retrains"].items()) or "none"
        reasons = "; ".join(x for x in b["retrain_reasons"] if x)
        delay = "-" if b["delay_s_median"] is None else f"{b['delay_s_median']:.0f} s"
        lines.append(
            f"| {r['dataset']} ({r['rows']:,} rows) | {r['sample_rate']:.3g} | "
            f"{num(f['auroc'])} / {num(b['auroc'])} | "
            f"{pct(f['alert_rate_normal'])} / {pct(b['alert_rate_normal'])} | "
            f"{pct(b['window_alert_rate_normal_min'])} .. {pct(b['window_alert_rate_normal_max'])} "
            f"({b['window_by']}) | "
            f"{pct(b['window_alert_rate_normal_max_after_first_retrain'])} "
            f"({b['windows_after_first_retrain']} windows) | {pct(f['recall'])} / {pct(b['recall'])} | "
            f"{b['detected_windows']} of {b['anomaly_windows']} | {delay} | {b['drift_events']} | "
            f"{retrains}{f' ({reasons})' if reasons else ''} | {b['reloads']} |"
        )
    lines.append("")
    for r in rows:
        lines.append(
            f"{r['dataset']}: alert rate on normal rows per window (backtest) "
            + ", ".join(pct(w.get("alert_rate_normal")) for w in r["backtest"]["windows"])
        )
    lines.append("")
    return lines
