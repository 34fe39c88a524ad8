"""A simulated pump fleet with faults injected at known times (demo, tests, benchmarks).

Each pump has a latent load that follows a (time-compressed) daily cycle plus slow AR(1)
noise around its set point; half the fleet runs at a low set point, half at a high one.
The sensors are coupled through the load the way a centrifugal pump's are: rpm, flow and
motor current rise with load, pressure with flow, vibration with rpm, and temperature
follows load with a lag. Deterministic for a seed.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from detector.events import format_time_ms

FEATURES = (
    "temperature_c",
    "vibration_mm_s",
    "pressure_bar",
    "flow_m3_h",
    "motor_current_a",
    "rpm",
)
T, VIB, PRES, FLOW, CUR, RPM = range(len(FEATURES))
# Noise per sensor, in its unit: what a healthy sensor's reading scatters by.
NOISE = np.array([0.3, 0.06, 0.05, 1.5, 0.4, 8.0])


@dataclass(frozen=True)
class FleetSpec:
    n_pumps: int = 20
    # One simulated "day" in steps (6000 s at 1 s per step: the demo streams a fifth of it).
    day_steps: int = 6000
    interval_s: float = 1.0
    seed: int = 7
    # The event time of step 0. The demo sets it from its clock so that the story ends "now";
    # never a fixed date: the retrainer ages samples by event time (see retrain.window).
    start: datetime = field(default_factory=lambda: datetime.now(UTC))

    def entity(self, pump: int) -> str:
        return f"pump-{pump:02d}"


@dataclass(frozen=True)
class Scenario:
    """A fault on one pump (or records) over [start_step, start_step + duration_steps)."""

    name: str
    entity: str
    start_step: int
    duration_steps: int
    expect: str  # "alert", "dead_letter" or "scored" (missing readings are not a fault)
    description: str

    @property
    def end_step(self) -> int:
        return self.start_step + self.duration_steps


@dataclass(frozen=True)
class Drift:
    """From ``start_step`` on, the whole fleet's temperature reads this much higher."""

    start_step: int
    temperature_offset_c: float = 2.0


@dataclass(frozen=True)
class LabelledEvent:
    raw: bytes
    step: int
    entity: str
    scenario: str | None


def simulate(spec: FleetSpec, n_steps: int) -> np.ndarray:
    """Healthy readings, shape (n_steps, n_pumps, len(FEATURES))."""
    rng = np.random.default_rng(spec.seed)
    p = spec.n_pumps
    set_point = np.where(np.arange(p) < p // 2, 0.4, 0.8)
    phase = rng.uniform(0, 2 * np.pi, p)
    temp_offset = rng.normal(0, 0.8, p)
    t = np.arange(n_steps)[:, None]
    noise = np.zeros((n_steps, p))
    shocks = rng.normal(0, 0.01, (n_steps, p))
    for i in range(1, n_steps):  # AR(1): each pump's load wanders (time constant ~10 steps)
        noise[i] = 0.9 * noise[i - 1] + shocks[i]
    load = set_point + 0.015 * np.sin(2 * np.pi * t / spec.day_steps + phase) + noise
    lagged = np.empty_like(load)
    lagged[0] = load[0]
    for i in range(1, n_steps):  # temperature follows load with a lag (first-order)
        lagged[i] = lagged[i - 1] + 0.05 * (load[i] - lagged[i - 1])
    x = np.empty((n_steps, p, len(FEATURES)))
    x[..., RPM] = 900 + 1000 * load
    x[..., FLOW] = 20 + 150 * load
    x[..., PRES] = 1 + 0.03 * x[..., FLOW]
    x[..., CUR] = 5 + 40 * load
    x[..., VIB] = 0.5 + 0.0015 * x[..., RPM]
    x[..., T] = 35 + 30 * lagged + temp_offset
    return x + rng.normal(size=x.shape) * NOISE


def default_scenarios(spec: FleetSpec, start_step: int, n_steps: int) -> list[Scenario]:
    """One of each fault, spread over the stream at known steps."""

    def at(fraction: float) -> int:
        return start_step + int(fraction * n_steps)

    span = max(10, n_steps // 10)
    e = spec.entity
    return [
        Scenario("spike", e(3), at(0.08), 3, "alert", "vibration jumps to 4x for 3 readings"),
        Scenario("malformed", "-", at(0.10), 1, "dead_letter", "records that are not valid events"),
        Scenario(
            "stuck_sensor",
            e(5),
            at(0.12),
            span,
            "alert",
            "flow freezes at its last value while the load moves",
        ),
        Scenario(
            "bearing_degradation",
            e(14),
            at(0.15),
            3 * span,
            "alert",
            "vibration (and a little temperature) ramps up slowly",
        ),
        Scenario(
            "broken_correlation",
            e(2),
            at(0.30),
            max(5, span // 3),
            "alert",
            "high motor current at low flow and rpm: each value normal alone",
        ),
        Scenario(
            "missing_readings",
            e(11),
            at(0.35),
            span // 2,
            "scored",
            "some sensors absent or null (not a fault: scored on the rest)",
        ),
        Scenario("spike", e(8), at(0.85), 3, "alert", "a second spike, after the drift"),
    ]


def _inject(x: np.ndarray, spec: FleetSpec, start_step: int, scenarios: Sequence[Scenario]) -> None:
    for sc in scenarios:
        if sc.expect != "alert":
            continue
        pump = int(sc.entity.split("-")[1])
        a, b = sc.start_step - start_step, sc.end_step - start_step
        a, b = max(0, a), min(x.shape[0], b)
        if a >= b:
            continue
        if sc.name == "spike":
            x[a:b, pump, VIB] *= 4.0
        elif sc.name == "stuck_sensor":
            x[a:b, pump, FLOW] = x[a - 1 if a > 0 else a, pump, FLOW]
        elif sc.name == "bearing_degradation":
            ramp = np.linspace(0.0, 1.0, b - a)
            x[a:b, pump, VIB] += 2.5 * ramp
            x[a:b, pump, T] += 3.0 * ramp
        elif sc.name == "broken_correlation":
            # The current a high-set-point pump draws, on a low-set-point pump's flow and rpm.
            x[a:b, pump, CUR] = 5 + 40 * 0.8 + np.random.default_rng(1).normal(0, NOISE[CUR], b - a)


def starting_before(now_s: float, n_steps: int, spec: FleetSpec | None = None) -> FleetSpec:
    """A fleet whose ``n_steps`` steps end at ``now_s`` (seconds since the epoch)."""
    spec = spec or FleetSpec()
    start = datetime.fromtimestamp(now_s - n_steps * spec.interval_s, UTC)
    return replace(spec, start=start)


def _iso(spec: FleetSpec, step: int) -> str:
    return format_time_ms((spec.start.timestamp() + step * spec.interval_s) * 1000.0)


def normal_events(spec: FleetSpec, n_steps: int) -> list[dict[str, Any]]:
    """Training history: every pump, every step of [0, n_steps), all healthy."""
    x = simulate(spec, n_steps)
    return [
        {
            "entity": spec.entity(p),
            "ts": _iso(spec, s),
            "values": dict(zip(FEATURES, x[s, p].round(4).tolist(), strict=True)),
        }
        for s in range(n_steps)
        for p in range(spec.n_pumps)
    ]


def stream_events(
    spec: FleetSpec,
    start_step: int,
    n_steps: int,
    scenarios: Sequence[Scenario],
    drift: Drift | None = None,
    max_record_bytes: int = 4096,
) -> list[LabelledEvent]:
    """The stream after training: steps [start_step, start_step + n_steps), faults injected."""
    x = simulate(spec, start_step + n_steps)[start_step:]
    if drift is not None:
        x[max(0, drift.start_step - start_step) :, :, T] += drift.temperature_offset_c
    _inject(x, spec, start_step, scenarios)
    by_step: dict[tuple[str, int], str] = {}
    for sc in scenarios:
        if sc.expect in ("alert", "scored"):
            for s in range(sc.start_step, sc.end_step):
                by_step[(sc.entity, s)] = sc.name
    rng = np.random.default_rng(spec.seed + 1)
    out: list[LabelledEvent] = []
    malformed = [sc for sc in scenarios if sc.name == "malformed"]
    for i in range(n_steps):
        step = start_step + i
        for p in range(spec.n_pumps):
            entity = spec.entity(p)
            label = by_step.get((entity, step))
            values: dict[str, Any] = dict(zip(FEATURES, x[i, p].round(4).tolist(), strict=True))
            if label == "missing_readings":
                for name in rng.choice(FEATURES, 2, replace=False):
                    if rng.random() < 0.5:
                        del values[str(name)]
                    else:
                        values[str(name)] = None
            raw = orjson.dumps({"entity": entity, "ts": _iso(spec, step), "values": values})
            out.append(LabelledEvent(raw, step, entity, label))
        for sc in malformed:
            if sc.start_step == step:
                out.extend(
                    LabelledEvent(raw, step, "-", "malformed")
                    for raw in malformed_records(max_record_bytes, _iso(spec, step))
                )
    return out


def malformed_records(max_record_bytes: int, ts: str) -> list[bytes]:
    """One record of each kind a broken producer sends (``ts``: the event time they carry)."""
    return [
        b"pump-03 temperature=61.2 vibration=2.1",  # not JSON
        b'[{"entity": "pump-03"}]',  # JSON, not an object
        orjson.dumps(
            {"entity": "pump-03", "ts": ts, "values": {"temperature_c": "hot"}}
        ),  # string for a number
        b'{"entity": "pump-03", "pad": "' + b"x" * (max_record_bytes + 10) + b'"}',  # oversize
    ]


def write_csv(events: Sequence[dict[str, Any]], path: Path) -> None:
    """Normal events as CSV: timestamp, entity, features, label (0)."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "entity", *FEATURES, "label"])
        for e in events:
            w.writerow([e["ts"], e["entity"], *(e["values"].get(f, "") for f in FEATURES), 0])
