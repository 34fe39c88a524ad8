"""Per-entity temporal features: what point-wise scoring cannot see.

For each configured feature f with window N (``features.temporal``), derived features are
added to every event of an entity, from that entity's own recent events; which ones is
``features.temporal_forms``:

* ``f__diff``   the change since the entity's previous value,
* ``f__meanN``  the mean of its last N values (this one included),
* ``f__stdN``   their standard deviation,
* ``f__dev``    the value minus a slow baseline of the entity's own earlier values (an
                exponentially weighted mean, half-life ``features.temporal_halflife_events``).

``diff``, ``std`` and ``dev`` are level-invariant: a per-entity offset or a level shift of
the whole fleet moves none of them for long (``dev`` for about its half-life), so with
``features.temporal_raw = false`` (the raw value itself no longer a feature) such a change
does not flood alerts, while a spike, a stuck sensor, a fast ramp or broken correlations
between an entity's sensors still do.

A sensor stuck at a plausible value has a rolling std of zero; a slow drift moves the
rolling mean away from where the entity's other sensors say it should be, with N times less
noise than a single reading. The same ``TemporalState`` computes them in training (rows
per entity in time order) and in the service (state per entity of the partitions the
replica owns), so both see identical values. Until an entity has N values (a new entity,
or after a rebalance rebuilds the state) its derived features are missing: the row is
scored on the point-wise features only (the exact marginal), and counted. A model with no
point-wise feature (``temporal_raw = false`` on every feature) has nothing to judge those
rows by: they score as normal, so an entity's first N-1 events (again after a rebalance)
cannot alert.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FORMS = ("diff", "mean", "std", "dev")
DEFAULT_FORMS = ("diff", "mean", "std")
DEFAULT_HALFLIFE_EVENTS = 30.0
# A warm baseline moves by at most this many typical deviations per event (see _follow).
CLIP_SCALES = 4.0


@dataclass(frozen=True)
class TemporalPlan:
    """What to derive: feature -> window, which forms, the baseline's half-life in events."""

    windows: Mapping[str, int] = field(default_factory=dict)
    forms: tuple[str, ...] = DEFAULT_FORMS
    halflife_events: float = DEFAULT_HALFLIFE_EVENTS

    def __bool__(self) -> bool:
        return bool(self.windows)

    def spelled(self, f: str) -> dict[str, str]:
        """Form -> derived column name, for this plan's forms of feature ``f``."""
        n = self.windows[f]
        every = {
            "diff": f"{f}__diff",
            "mean": f"{f}__mean{n}",
            "std": f"{f}__std{n}",
            "dev": f"{f}__dev",
        }
        return {form: every[form] for form in self.forms}

    def names_of(self, f: str) -> list[str]:
        return list(self.spelled(f).values())

    def describe(self, name: str) -> str | None:
        """How a derived column is computed, for the column table; None if not derived."""
        for f in self.windows:
            if name in self.names_of(f):
                if name == f"{f}__dev":
                    return f"temporal feature of {f} (minus its baseline, half-life {self.halflife_events:g} events)"
                return f"temporal feature of {f} (last {self.windows[f]} events)"
        return None


def as_plan(plan: TemporalPlan | Mapping[str, int]) -> TemporalPlan:
    """A plan from a plan or from windows alone (the default forms)."""
    return plan if isinstance(plan, TemporalPlan) else TemporalPlan(dict(plan))


def derived_names(plan: TemporalPlan | Mapping[str, int]) -> list[str]:
    plan = as_plan(plan)
    return [name for f in plan.windows for name in plan.names_of(f)]


class TemporalState:
    """Recent values per entity, bounded: the least recently seen entities are evicted."""

    def __init__(self, plan: TemporalPlan | Mapping[str, int], max_entities: int = 100_000) -> None:
        self.plan = as_plan(plan)
        self.windows = dict(self.plan.windows)
        self._spelled = {f: self.plan.spelled(f) for f in self.windows}
        # Weight of a new value in the baseline: half of it is gone after halflife events.
        self._alpha = 1.0 - 0.5 ** (1.0 / self.plan.halflife_events)
        self.max_entities = max_entities
        self._state: OrderedDict[str, dict[str, deque[float]]] = OrderedDict()
        self._baseline: dict[str, dict[str, float]] = {}
        self.warmup_rows = 0
        self.evictions = 0  # entities forgotten to stay within max_entities (they warm up again)

    def __len__(self) -> int:
        return len(self._state)

    def reset(self) -> None:
        """Forget everything (after a rebalance): entities warm up again."""
        self._state.clear()
        self._baseline.clear()

    def augment(
        self, entities: Sequence[str | None], rows: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """The rows with derived features added, in order; updates the state."""
        out = []
        for entity, row in zip(entities, rows, strict=True):
            derived = self._step(entity, row)
            out.append({**row, **derived})
        return out

    def augment_checked(
        self, entities: Sequence[str | None], rows: Sequence[Mapping[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[int, str]]:
        """``augment``, with an exception confined to its row: (rows, row -> what failed).

        A failed row comes back unchanged, for the caller to dead-letter.
        """
        out: list[dict[str, Any]] = []
        failed: dict[int, str] = {}
        for i, (entity, row) in enumerate(zip(entities, rows, strict=True)):
            try:
                out.append({**row, **self._step(entity, row)})
            except Exception as exc:
                failed[i] = f"{type(exc).__name__}: {str(exc)[:300]}"
                out.append(dict(row))
        return out, failed

    def _step(self, entity: str | None, row: Mapping[str, Any]) -> dict[str, Any]:
        derived: dict[str, Any] = {}
        key = entity if entity is not None else ""
        state = self._state.get(key)
        if state is None:
            state = {f: deque(maxlen=n) for f, n in self.windows.items()}
            self._state[key] = state
            self._baseline[key] = {}
            if len(self._state) > self.max_entities:
                gone, _ = self._state.popitem(last=False)  # O(1): the least recently seen
                self._baseline.pop(gone, None)
                self.evictions += 1
        else:
            self._state.move_to_end(key)
        baseline = self._baseline[key]
        warming = False
        for f, n in self.windows.items():
            buf = state[f]
            value = row.get(f)
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
            spelled = self._spelled[f]
            if ok:
                buf.append(float(value))  # type: ignore[arg-type]
                # The deviation is from the baseline of the values before this one.
                before = self._follow(baseline, f, float(value), warm=len(buf) >= n)  # type: ignore[arg-type]
            if not ok or len(buf) < n:
                warming = True
                derived.update(dict.fromkeys(spelled.values()))
                continue
            values = np.fromiter(buf, dtype=np.float64, count=n)
            if "diff" in spelled:
                derived[spelled["diff"]] = float(values[-1] - values[-2]) if n > 1 else 0.0
            if "mean" in spelled:
                derived[spelled["mean"]] = float(values.mean())
            if "std" in spelled:
                derived[spelled["std"]] = float(values.std())
            if "dev" in spelled:
                derived[spelled["dev"]] = float(values[-1] - before)
        if warming:
            self.warmup_rows += 1
        return derived

    def _follow(self, baseline: dict[str, float], f: str, value: float, warm: bool) -> float:
        """Move f's baseline towards ``value``; return the baseline before the move.

        A robust (clipped) exponentially weighted mean: once warm, a step moves the level
        by at most CLIP_SCALES times the typical deviation, so a short fault barely
        shifts the baseline and its end is not followed by a long echo of false alerts.
        A lasting level shift is still absorbed: every clipped step widens the typical
        deviation, and once the values have stayed beyond the bound on the same side for
        longer than the half-life the clip is lifted (a new level, not a fault). Without
        that, a series that had been constant (typical deviation near 0) took over a
        thousand events to accept any new level.
        """
        level = baseline.get(f)
        if level is None:
            baseline[f], baseline[f + "\0scale"], baseline[f + "\0run"] = value, 0.0, 0.0
            return value
        scale, run = baseline[f + "\0scale"], baseline[f + "\0run"]
        d = value - level
        bound = CLIP_SCALES * scale if warm and scale > 0.0 else math.inf
        if abs(d) <= bound:
            run = 0.0
        elif (d > 0) == (run > 0):
            run += 1.0 if d > 0 else -1.0
        else:
            run = 1.0 if d > 0 else -1.0
        c = d if abs(run) > self.plan.halflife_events else min(max(d, -bound), bound)
        baseline[f] = level + self._alpha * c
        baseline[f + "\0scale"] = scale + self._alpha * (abs(c) - scale)
        baseline[f + "\0run"] = run
        return level


def augment_offline(
    rows: Sequence[Mapping[str, Any]],
    entities: Sequence[str | None] | None,
    times: Sequence[Any] | None,
    windows: TemporalPlan | Mapping[str, int],
) -> tuple[list[dict[str, Any]], int]:
    """Derived features for a file: per entity in time order, returned in the file's order.

    Ties and missing times keep file order (a stable sort), as a stream keeps arrival order.
    """
    n = len(rows)
    ents: Sequence[str | None] = entities if entities is not None else [None] * n
    order = sorted(
        range(n),
        # (None and "" are one series, as in the stream's state)
        key=lambda i: (
            str(ents[i]) if ents[i] is not None else "",
            sortable_time(times[i]) if times is not None else 0.0,
        ),
    )
    state = TemporalState(windows, max_entities=max(1, len(set(ents))))
    augmented = state.augment([ents[i] for i in order], [rows[i] for i in order])
    out: list[dict[str, Any]] = [{}] * n
    for pos, i in enumerate(order):
        out[i] = augmented[pos]
    return out, state.warmup_rows


def sortable_time(t: Any) -> float:
    if t is None or t == "":
        return math.inf
    if isinstance(t, int | float):
        return float(t)
    from detector.events import parse_time_ms

    try:
        return float(parse_time_ms(t, "timestamp"))
    except Exception:
        return math.inf
