"""The backtest's figures: overall, per event-time window, and per labelled anomaly window.

Two rates are kept apart. ``flagged``: the row scored below the warning threshold (what
``detector evaluate`` counts). ``alerted``: an alert was sent for it (after the per-entity
cooldown; equal to flagged with the cooldown off, the default). AUROC, AUPRC and the
recall per severity come from ``detector.model.evaluate.quality``, the code behind
``detector evaluate``, applied to the scores each row got from the model in service when
it arrived.

A labelled anomaly window is a run of consecutive anomalous rows of one entity (of the
whole stream when there is no entity column), in stream order. Its detection delay is the
event time from its first row to its first flagged row; a window with no flagged row is
missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detector.backtest.run import Replay
from detector.backtest.source import Stream
from detector.events import format_time_ms
from detector.model.evaluate import quality

# With more of the equal event-time windows empty than this, windows hold equal row counts.
MAX_EMPTY_WINDOW_SHARE = 0.25


@dataclass
class _Scores:
    """The parts of a ScoreResult that ``quality`` reads."""

    log_likelihood: np.ndarray
    severity: np.ndarray
    severity_names: tuple[str, ...]


def _rate(mask: np.ndarray, of: np.ndarray) -> float | None:
    n = int(of.sum())
    return float((mask & of).sum() / n) if n else None


def _labelled(replay: Replay, labels: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
    scores = _Scores(replay.log_likelihood[rows], replay.severity[rows], replay.severity_names)
    q = quality(scores, labels[rows])  # type: ignore[arg-type]
    scored = np.isfinite(replay.log_likelihood[rows])
    y = labels[rows].astype(bool)
    normal, anomalous = scored & ~y, scored & y
    flagged = replay.severity[rows] > 0
    alerted = replay.alerted[rows]
    q["alert_rate_normal"] = _rate(alerted, normal)
    q["flagged_rate_normal"] = _rate(flagged, normal)
    q["recall_alerted"] = _rate(alerted, anomalous)
    q["recall_flagged"] = _rate(flagged, anomalous)
    return q


def window_bounds(times_ms: np.ndarray, n_windows: int) -> np.ndarray:
    """``n_windows + 1`` edges splitting [first, last] event time into equal spans."""
    lo, hi = float(times_ms[0]), float(times_ms[-1])
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, n_windows + 1)


def window_by(times_ms: np.ndarray, n_windows: int, asked: str = "auto") -> str:
    """``time`` (equal event-time spans) or ``rows`` (equal row counts).

    ``auto``: time, unless more than ``MAX_EMPTY_WINDOW_SHARE`` of the equal spans would be
    empty (a recording with long pauses: sessions days apart), where equal spans measure
    the pauses; then rows.
    """
    if asked != "auto":
        return asked
    edges = window_bounds(times_ms, n_windows)
    which = np.clip(np.searchsorted(edges, times_ms, side="right") - 1, 0, n_windows - 1)
    empty = n_windows - np.unique(which).size
    return "rows" if empty > MAX_EMPTY_WINDOW_SHARE * n_windows else "time"


def window_of_rows(times_ms: np.ndarray, n_windows: int, by: str) -> np.ndarray:
    """Each row's window index."""
    n = times_ms.size
    if by == "rows":
        return np.minimum(np.arange(n) * n_windows // max(n, 1), n_windows - 1)
    edges = window_bounds(times_ms, n_windows)
    return np.clip(np.searchsorted(edges, times_ms, side="right") - 1, 0, n_windows - 1)


def per_window(
    stream: Stream, replay: Replay, n_windows: int, by: str = "time"
) -> list[dict[str, Any]]:
    which = window_of_rows(stream.times_ms, n_windows, by)
    edges = window_bounds(stream.times_ms, n_windows)
    out = []
    for w in range(n_windows):
        rows = np.flatnonzero(which == w)
        scored = np.isfinite(replay.log_likelihood[rows])
        if by == "rows" and rows.size:
            lo, hi = float(stream.times_ms[rows[0]]), float(stream.times_ms[rows[-1]])
        else:
            lo, hi = float(edges[w]), float(edges[w + 1])
        item: dict[str, Any] = {
            "window": w,
            "start": format_time_ms(lo),
            "end": format_time_ms(hi),
            "start_ms": lo,
            "end_ms": hi,
            "rows": int(rows.size),
            "scored": int(scored.sum()),
            "alert_rate": _rate(replay.alerted[rows], scored),
            "model_versions": sorted({replay.versions[i] for i in replay.version_index[rows]}),
        }
        if stream.labels is not None and rows.size:
            q = _labelled(replay, stream.labels, rows)
            warning = q["per_severity"].get(replay.severity_names[0], {})
            item.update(
                normal=q["normal"],
                anomalous=q["anomalous"],
                alert_rate_normal=q["alert_rate_normal"],
                flagged_rate_normal=q["flagged_rate_normal"],
                auroc=q["auroc"],
                auprc=q["auprc"],
                recall_warning=warning.get("recall_anomalous"),
            )
        out.append(item)
    return out


def anomaly_windows(
    times_ms: np.ndarray,
    labels: np.ndarray,
    flagged: np.ndarray,
    entities: list[str | None] | None = None,
) -> list[dict[str, Any]]:
    """Runs of consecutive anomalous rows per entity, each with its detection delay."""
    n = labels.size
    ents = entities if entities is not None else [None] * n
    by_entity: dict[str | None, list[int]] = {}
    for i in range(n):
        by_entity.setdefault(ents[i], []).append(i)
    out: list[dict[str, Any]] = []
    for entity, idx in by_entity.items():
        run: list[int] = []
        for i in [*idx, -1]:  # -1 closes the last run
            if i >= 0 and labels[i]:
                run.append(i)
                continue
            if run:
                out.append(_window(times_ms, flagged, entity, run))
                run = []
    out.sort(key=lambda w: (w["start_ms"], str(w["entity"])))
    return out


def _window(
    times_ms: np.ndarray, flagged: np.ndarray, entity: str | None, run: list[int]
) -> dict[str, Any]:
    hits = [k for k, i in enumerate(run) if flagged[i]]
    start, end = float(times_ms[run[0]]), float(times_ms[run[-1]])
    first = hits[0] if hits else None
    return {
        "entity": entity,
        "start": format_time_ms(start),
        "end": format_time_ms(end),
        "start_ms": start,
        "end_ms": end,
        "rows": len(run),
        "first_row": int(run[0]),
        "detected": first is not None,
        "delay_s": None if first is None else (float(times_ms[run[first]]) - start) / 1000.0,
        "delay_rows": first,
        "flagged_rows": len(hits),
    }


def delay_summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    delays = np.array([w["delay_s"] for w in windows if w["detected"]], dtype=float)
    rows = np.array([w["delay_rows"] for w in windows if w["detected"]], dtype=float)
    return {
        "windows": len(windows),
        "detected": int(delays.size),
        "detection_rate": delays.size / len(windows) if windows else None,
        "delay_s_median": float(np.median(delays)) if delays.size else None,
        "delay_s_mean": float(delays.mean()) if delays.size else None,
        "delay_s_p90": float(np.percentile(delays, 90)) if delays.size else None,
        "delay_rows_median": float(np.median(rows)) if rows.size else None,
    }


def summarize(stream: Stream, replay: Replay, n_windows: int, by: str = "auto") -> dict[str, Any]:
    """The backtest's JSON, without the run's settings (the caller adds those)."""
    by = window_by(stream.times_ms, n_windows, by)
    scored = np.isfinite(replay.log_likelihood)
    overall: dict[str, Any] = {
        "rows": len(stream),
        "scored": int(scored.sum()),
        "dead_letters": int(replay.dead_letter.sum()),
        "dead_letters_by_reason": dict(sorted(replay.dead_letters.items())),
        "alerts": len(replay.alerts),
        "alerts_by_severity": {
            name: int(sum(a["severity"] == name for a in replay.alerts))
            for name in replay.severity_names
        },
        "suppressed_by_cooldown": replay.suppressed,
        "target_alert_rate": replay.target_alert_rate,
        "alert_rate": _rate(replay.alerted, scored),
        "flagged_rate": _rate(replay.severity > 0, scored),
    }
    out: dict[str, Any] = {
        "stream": {
            "first_event_time": format_time_ms(float(stream.times_ms[0])),
            "last_event_time": format_time_ms(float(stream.times_ms[-1])),
            "span_s": float(stream.times_ms[-1] - stream.times_ms[0]) / 1000.0,
            "time_column": stream.time_column,
            "time_cells_filled": stream.times_filled,
            "out_of_order_rows": stream.out_of_order_rows,
            "invalid_rows_left_out": stream.invalid_rows,
            "labelled": stream.labels is not None,
        },
        "overall": overall,
    }
    if stream.labels is not None:
        rows = np.arange(len(stream))
        overall.update(_labelled(replay, stream.labels, rows))
        windows = anomaly_windows(
            stream.times_ms, stream.labels, replay.severity > 0, stream.entities
        )
        out["detection_delay"] = delay_summary(windows)
        out["anomaly_windows"] = windows
    out["window_by"] = by
    out["windows"] = per_window(stream, replay, n_windows, by)
    out["model_versions"] = replay.versions
    out["drift_events"] = replay.drift_events
    out["retrains"] = replay.retrains
    out["reloads"] = replay.reloads
    out["retrain_outcomes"] = {
        k: sum(r["outcome"] == k for r in replay.retrains)
        for k in sorted({r["outcome"] for r in replay.retrains})
    }
    return out
