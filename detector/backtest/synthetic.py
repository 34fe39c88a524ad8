"""A drifting fleet with labelled faults, written as CSV: data to try the backtest on.

``n_entities`` machines report four coupled sensors every ``interval_s``. Each machine has
its own offset; all follow a daily (seasonal) cycle; from ``drift_start`` on the whole
fleet drifts slowly (a linear ramp), and at ``shift_at`` its level shifts at once. Faults
are injected on one machine at a time and labelled 1: spikes, a stuck sensor, a slow
ramp, and a broken correlation (each value plausible alone). Deterministic for a seed;
times start at a fixed date, so the same arguments write the same file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.events import format_time_ms

FEATURES = ("temperature", "pressure", "flow", "vibration")
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a fixed origin, never the clock
DAY_S = 86_400.0


@dataclass(frozen=True)
class FleetShape:
    n_entities: int = 8
    days: float = 6.0
    interval_s: float = 60.0
    drift_start: float = 0.5  # share of the period where the slow drift begins
    drift_per_day: float = 0.6  # temperature units per day (noise is ~0.5)
    shift_at: float = 0.75  # share of the period where the level shifts
    shift: float = 2.5  # temperature units
    faults: int = 24
    fault_steps: int = 20
    seed: int = 0

    @property
    def steps(self) -> int:
        return max(10, int(self.days * DAY_S / self.interval_s))


def simulate(shape: FleetShape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values (steps, entities, features), labels (steps, entities), times ms (steps,))."""
    rng = np.random.default_rng(shape.seed)
    n, e = shape.steps, shape.n_entities
    t_s = np.arange(n) * shape.interval_s
    season = np.sin(2 * np.pi * t_s / DAY_S)[:, None]
    offset = rng.normal(0, 1.5, e)[None, :]
    load = 0.6 + 0.15 * season + rng.normal(0, 0.03, (n, e))
    x = np.empty((n, e, len(FEATURES)))
    x[..., 0] = 40 + 10 * load + offset + rng.normal(0, 0.5, (n, e))
    x[..., 1] = 2 + 3 * load + 0.1 * offset + rng.normal(0, 0.05, (n, e))
    x[..., 2] = 50 + 80 * load + rng.normal(0, 1.5, (n, e))
    x[..., 3] = 0.5 + 0.8 * load + rng.normal(0, 0.04, (n, e))
    frac = np.arange(n) / n
    ramp = np.clip(frac - shape.drift_start, 0, None) * shape.days * shape.drift_per_day
    x[..., 0] += ramp[:, None]
    x[frac >= shape.shift_at, :, 0] += shape.shift
    labels = np.zeros((n, e), dtype=np.int8)
    # Faults after the first third: a backtest trains on the first part.
    starts = np.sort(rng.integers(n // 3, n - shape.fault_steps, shape.faults))
    for k, a in enumerate(starts.tolist()):
        b = a + shape.fault_steps
        m = int(rng.integers(0, e))
        kind = k % 4
        if kind == 0:  # spike: vibration triples
            x[a:b, m, 3] *= 3.0
        elif kind == 1:  # stuck flow sensor while the load moves
            x[a:b, m, 2] = x[a, m, 2] + 25.0 * np.sign(rng.normal())
        elif kind == 2:  # slow ramp of temperature and vibration
            r = np.linspace(0, 1, b - a)
            x[a:b, m, 0] += 6 * r
            x[a:b, m, 3] += 0.6 * r
        else:  # pressure of a high load at a low flow
            x[a:b, m, 1] = 2 + 3 * 0.95
            x[a:b, m, 2] = 50 + 80 * 0.3
        labels[a:b, m] = 1
    times = START_MS + (t_s * 1000).astype(np.int64)
    return x, labels, times


def write_fleet_csv(path: Path, shape: FleetShape) -> int:
    """timestamp, entity, the features, label; one row per machine per step. Returns rows."""
    x, labels, times = simulate(shape)
    rows = 0
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "entity", *FEATURES, "label"])
        for i in range(x.shape[0]):
            ts = format_time_ms(float(times[i]))
            for m in range(x.shape[1]):
                w.writerow([ts, f"m-{m:02d}", *np.round(x[i, m], 4).tolist(), int(labels[i, m])])
                rows += 1
    return rows
