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

With ``features.temporal_peer`` (a fleet) every derived value is taken relative to the
other machines: minus the median of the same feature's latest value over the last
``PEER_ENTITIES`` other entities seen. A change the whole fleet shares at once (a level
shift, a common cycle) cancels out within about one round of reports, where alone each
entity's ``dev`` and ``std`` would show it for its half-life and its window; one machine's
fault stands out from its peers. Until ``MIN_PEERS`` others have reported (a new service,
after a rebalance) the derived values are missing, as in warm-up.

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
import statistics
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from detector.errors import DataError

FORMS = ("diff", "mean", "std", "dev")
DEFAULT_FORMS = ("diff", "mean", "std")
DEFAULT_HALFLIFE_EVENTS = 30.0
# A value beyond this many typical deviations does not move a warm baseline (see _follow).
CLIP_SCALES = 4.0
# The typical deviation's floor from the window's spread: half of what Gaussian noise gives
# (mean absolute deviation / median absolute step = 0.798 / 0.954), a guard against a
# frozen baseline, not an estimate (its noise over N values would widen the bound).
SPREAD_TO_TYPICAL = 0.5 * 0.84
# features.temporal_peer: compared with the latest values of this many other entities, and
# with no fewer than MIN_PEERS of them (a median of fewer is one machine's own noise).
PEER_ENTITIES = 15
MIN_PEERS = 3


@dataclass(frozen=True)
class TemporalPlan:
    """What to derive: feature -> window, which forms, the baseline's half-life in events."""

    windows: Mapping[str, int] = field(default_factory=dict)
    forms: tuple[str, ...] = DEFAULT_FORMS
    halflife_events: float = DEFAULT_HALFLIFE_EVENTS
    peer: bool = False  # each derived value minus the other entities' median (a fleet)

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
        peers = ", minus the other entities' median" if self.peer else ""
        for f in self.windows:
            if name in self.names_of(f):
                if name == f"{f}__dev":
                    return f"temporal feature of {f} (minus its baseline, half-life {self.halflife_events:g} events{peers})"
                return f"temporal feature of {f} (last {self.windows[f]} events{peers})"
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
        # features.temporal_peer: the latest derived values of the entities seen last.
        self._peers: OrderedDict[str, dict[str, float]] = OrderedDict()
        self.warmup_rows = 0
        self.evictions = 0  # entities forgotten to stay within max_entities (they warm up again)

    def __len__(self) -> int:
        return len(self._state)

    def reset(self) -> None:
        """Forget everything (after a rebalance): entities warm up again."""
        self._state.clear()
        self._baseline.clear()
        self._peers.clear()

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
                before = self._follow(baseline, f, buf, warm=len(buf) >= n)
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
        if self.plan.peer and self._against_peers(key, derived):
            warming = True
        if warming:
            self.warmup_rows += 1
        return derived

    def _against_peers(self, key: str, derived: dict[str, Any]) -> bool:
        """Make ``derived`` relative to the other entities' latest values, in place.

        Returns True when a value is left missing for want of MIN_PEERS peers.
        """
        own = {name: v for name, v in derived.items() if v is not None}
        short = False
        others = [p for e, p in self._peers.items() if e != key][-PEER_ENTITIES:]
        for name, v in own.items():
            values = [p[name] for p in others if name in p]
            if len(values) < MIN_PEERS:
                derived[name], short = None, True
            else:
                derived[name] = v - statistics.median(values)
        self._peers[key] = own
        self._peers.move_to_end(key)
        if len(self._peers) > PEER_ENTITIES + 1:  # the entity itself and PEER_ENTITIES others
            self._peers.popitem(last=False)
        return short

    def _follow(
        self, baseline: dict[str, float], f: str, window: deque[float], warm: bool
    ) -> float:
        """Move f's baseline towards the newest value of ``window``; return it before the move.

        A robust exponentially weighted mean: once warm, a value beyond CLIP_SCALES typical
        deviations starts a run, and until a value comes back across the level, the run's
        values move neither the level nor the typical deviation. So a fault shorter than
        the half-life leaves the baseline where it was, and its end is not followed by an
        echo of false alerts while the baseline finds its way back. A lasting level shift
        is still absorbed: once a run outlasts the half-life (a new level, not a fault),
        the level jumps to the mean of the window's values of that run, after the same
        number of events for every entity of a fleet that shifted together. Before, each
        clipped value moved the level a little and widened the bound: a 20-event fault
        displaced the baseline by about 3 noise sigmas (alerts for ~50 events after it),
        and a fleet's machines accepted a shared shift at scattered times.
        """
        value = window[-1]
        level = baseline.get(f)
        if level is None:
            baseline[f], baseline[f + "\0run"] = value, 0.0
            baseline[f + "\0scale"] = baseline[f + "\0weight"] = 0.0
            return value
        scale, run, weight = (
            baseline[f + "\0scale"],
            baseline[f + "\0run"],
            baseline[f + "\0weight"],
        )
        d = value - level
        # The typical deviation, bias-corrected: an average started at 0 with weight alpha
        # per value would read about a fifth of the truth after 10 values, and a bound that
        # tight froze every new baseline (a flood after each start and rebalance).
        typical = scale / weight if weight > 0.0 else 0.0
        if warm:
            # ...and never below what the window's own spread says: an estimate taken
            # while the values were flat (a quantized sensor at rest) would otherwise
            # freeze the baseline for good, every later value starting a run.
            typical = max(typical, SPREAD_TO_TYPICAL * _median_step(window))
        bound = CLIP_SCALES * typical if warm and typical > 0.0 else math.inf
        if run and (d <= 0.0 if run > 0 else d >= 0.0):  # back across (or onto) the level:
            if warm:  # the run is over, whatever it was
                _forget(window, int(abs(run)), level, bound)
            run = 0.0
        if run == 0.0 and abs(d) <= bound:  # an ordinary value
            baseline[f] = level + self._alpha * d
            baseline[f + "\0scale"] = scale + self._alpha * (abs(d) - scale)
            baseline[f + "\0weight"] = weight + self._alpha * (1.0 - weight)
            baseline[f + "\0run"] = 0.0
            return level
        # Beyond the bound, or on the side of a run in progress: the level waits.
        run += 1.0 if d > 0 else -1.0
        if abs(run) > self.plan.halflife_events:
            recent = list(window)[-int(abs(run)) :]
            baseline[f], run = sum(recent) / len(recent), 0.0
        baseline[f + "\0run"] = run
        return level


def _median_step(window: deque[float]) -> float:
    """The median absolute change between consecutive values of the window (one step in
    it, a fault's start or end, does not move it)."""
    steps = [abs(b - a) for a, b in pairwise(window)]
    return statistics.median(steps) if steps else 0.0


def _forget(window: deque[float], run: int, level: float, bound: float) -> None:
    """Once a departure is over, the window keeps the level in place of its outlying values.

    Otherwise for the N events after a fault the rolling std and the diff still hold the
    fault's values, and those events alert (90% of them on the synthetic fleet): the
    values after a fault are to be judged against the entity's normal, not against the
    fault. The newest value (the one back across the level) is not part of the run.
    """
    for i in range(max(0, len(window) - 1 - run), len(window) - 1):
        if abs(window[i] - level) > bound:
            window[i] = level


def augment_offline(
    rows: Sequence[Mapping[str, Any]],
    entities: Sequence[str | None] | None,
    times: Sequence[Any] | None,
    windows: TemporalPlan | Mapping[str, int],
) -> tuple[list[dict[str, Any]], int]:
    """Derived features for a file, computed in event-time order, returned in the file's order.

    Ties and missing times keep file order (a stable sort), as a stream keeps arrival order.
    Each entity's values depend only on its own rows in that order; with peers
    (``features.temporal_peer``) also on the others' latest, as the stream sees them.
    """
    n = len(rows)
    ents: Sequence[str | None] = entities if entities is not None else [None] * n
    plan = as_plan(windows)
    if plan.peer and n:
        # (None and "" are one series, as in the stream's state)
        distinct = len({e if e is not None else "" for e in ents})
        if distinct <= MIN_PEERS:
            raise DataError(
                f"features.temporal_peer compares each entity with at least {MIN_PEERS} "
                f"others; the data has {distinct} entit{'y' if distinct == 1 else 'ies'} "
                "(set features.temporal_peer = false, or name the entity column)"
            )
    order = sorted(range(n), key=lambda i: sortable_time(times[i]) if times is not None else 0.0)
    state = TemporalState(plan, max_entities=max(1, len(set(ents))))
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
