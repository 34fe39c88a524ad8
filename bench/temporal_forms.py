"""Frozen scoring of the synthetic drifting fleet: raw levels against level-invariant forms.

    python -m bench.temporal_forms

Trains on the first 30% of ``detector synthetic``'s fleet (8 machines, offsets, daily
cycle, slow drift, a fleet-wide level shift at 75%, 24 labelled faults) and scores the rest
with that one model: the raw values (defaults), the diff / std / dev forms with the raw
level left out, and those forms relative to the other machines (``features.temporal_peer``). Prints the alert rate on normal rows overall and per tenth, where the
false alerts fall (events after a fault's end), and the recall of fault rows. The figures
in docs/temporal-features.md come from here.
"""

from __future__ import annotations

import logging

import numpy as np

from detector.backtest.synthetic import FEATURES, FleetShape, simulate
from detector.features.temporal import augment_offline
from detector.model.choose import level_invariant
from detector.model.scorer import Scorer
from detector.model.train import train
from detector.settings import load_settings


def main() -> None:
    logging.disable(logging.WARNING)
    x, lab, t = simulate(FleetShape())
    n, e, _ = x.shape
    rows = [dict(zip(FEATURES, x[i, m].tolist(), strict=True)) for i in range(n) for m in range(e)]
    ents = [f"m{m}" for _ in range(n) for m in range(e)]
    times = [int(t[i]) for i in range(n) for _ in range(e)]
    labels = lab.reshape(-1)
    steps = np.repeat(np.arange(n), e)
    k = int(0.3 * len(rows))
    # Events since the entity's last fault row (a huge number before its first).
    since = np.full(len(rows), 10**9)
    for m in range(e):
        last = -(10**9)
        for j in range(m, len(rows), e):
            if labels[j]:
                last = steps[j]
            since[j] = steps[j] - last
    defaults = load_settings(environ={})
    variants = {
        "raw values (default)": defaults,
        "diff, std, dev; raw left out": level_invariant(defaults, FEATURES),
        "the same against peers (temporal_peer)": level_invariant(defaults, FEATURES, peer=True),
    }
    for name, s in variants.items():
        data = rows
        plan = s.features.temporal_plan
        if plan:
            data, _ = augment_offline(rows, ents, times, plan)
        bundle = train(data[:k], s)
        alert = Scorer(bundle, s.features, s.thresholds).score(data[k:]).severity > 0
        y, far = labels[k:] == 1, since[k:] > 100
        tenths = np.array_split(np.arange(len(y)), 10)
        print(f"## {name}: model {bundle.summary.get('chosen')}")
        print(
            f"alert rate on normal rows {alert[~y].mean():.2%}, recall of fault rows {alert[y].mean():.2%}"
        )
        print("per tenth:", " ".join(f"{alert[ix][~y[ix]].mean():.2%}" for ix in tenths))
        print(
            "per tenth, >100 events after any fault:",
            " ".join(f"{alert[ix][~y[ix] & far[ix]].mean():.2%}" for ix in tenths),
        )
        soon = ~y & (since[k:] >= 1) & (since[k:] <= 10)
        print(
            f"the 10 events after a fault's end: {soon.sum()} rows, {alert[soon].mean():.0%} alert\n"
        )


if __name__ == "__main__":
    main()
