"""Per-entity temporal features: what point-wise scoring cannot see.

For each configured feature f with window N (``features.temporal``), three derived
features are added to every event of an entity, from that entity's own recent events:

* ``f__diff``   the change since the entity's previous value,
* ``f__meanN``  the mean of its last N values (this one included),
* ``f__stdN``   their standard deviation.

A sensor stuck at a plausible value has a rolling std of zero; a slow drift moves the
rolling mean away from where the entity's other sensors say it should be, with N times less
noise than a single reading. The same ``TemporalState`` computes them in training (rows
per entity in time order) and in the service (state per entity of the partitions the
replica owns), so both see identical values. Until an entity has N values (a new entity,
or after a rebalance rebuilds the state) its derived features are missing: the row is
scored on the point-wise features only (the exact marginal), and counted.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def derived_names(windows: Mapping[str, int]) -> list[str]:
    names = []
    for f, n in windows.items():
        names += [f"{f}__diff", f"{f}__mean{n}", f"{f}__std{n}"]
    return names


class TemporalState:
    """Recent values per entity, bounded: the least recently seen entities are evicted."""

    def __init__(self, windows: Mapping[str, int], max_entities: int = 100_000) -> None:
        self.windows = dict(windows)
        self.max_entities = max_entities
        self._state: OrderedDict[str, dict[str, deque[float]]] = OrderedDict()
        self.warmup_rows = 0
        self.evictions = 0  # entities forgotten to stay within max_entities (they warm up again)

    def __len__(self) -> int:
        return len(self._state)

    def reset(self) -> None:
        """Forget everything (after a rebalance): entities warm up again."""
        self._state.clear()

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
            if len(self._state) > self.max_entities:
                self._state.popitem(last=False)  # O(1): the least recently seen entity
                self.evictions += 1
        else:
            self._state.move_to_end(key)
        warming = False
        for f, n in self.windows.items():
            buf = state[f]
            value = row.get(f)
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
            if ok:
                buf.append(float(value))  # type: ignore[arg-type]
            if not ok or len(buf) < n:
                warming = True
                derived[f"{f}__diff"] = derived[f"{f}__mean{n}"] = derived[f"{f}__std{n}"] = None
                continue
            values = np.fromiter(buf, dtype=np.float64, count=n)
            derived[f"{f}__diff"] = float(values[-1] - values[-2]) if n > 1 else 0.0
            derived[f"{f}__mean{n}"] = float(values.mean())
            derived[f"{f}__std{n}"] = float(values.std())
        if warming:
            self.warmup_rows += 1
        return derived


def augment_offline(
    rows: Sequence[Mapping[str, Any]],
    entities: Sequence[str | None] | None,
    times: Sequence[Any] | None,
    windows: Mapping[str, int],
) -> tuple[list[dict[str, Any]], int]:
    """Derived features for a file: per entity in time order, returned in the file's order.

    Ties and missing times keep file order (a stable sort), as a stream keeps arrival order.
    """
    n = len(rows)
    ents: Sequence[str | None] = entities if entities is not None else [None] * n
    order = sorted(
        range(n), key=lambda i: (str(ents[i]), _sortable(times[i]) if times is not None else 0.0)
    )
    state = TemporalState(windows, max_entities=max(1, len(set(ents))))
    augmented = state.augment([ents[i] for i in order], [rows[i] for i in order])
    out: list[dict[str, Any]] = [{}] * n
    for pos, i in enumerate(order):
        out[i] = augmented[pos]
    return out, state.warmup_rows


def _sortable(t: Any) -> float:
    if t is None or t == "":
        return math.inf
    if isinstance(t, int | float):
        return float(t)
    from detector.events import parse_time_ms

    try:
        return float(parse_time_ms(t, "timestamp"))
    except Exception:
        return math.inf
