"""A machine's lasting fault must not become normal: its alerted samples are not learnt.

A retraining window mixes machines. When one of them has been alerting far more than the
others (a fault of that machine, not an operating point of the fleet), fitting on its
alerted rows teaches the candidate the fault: the next model no longer alerts on it, and
retrain by retrain the fault becomes normal (measured in
``tests/unit/backtest/test_run.py``: recall of a lasting one-machine fault fell from 67% to
2% after the first promotion). The window-wide ``retrain.max_alerted_fraction`` rule
cannot see this: one machine of four alerting all the time is a quarter of the window.

So an entity whose alerted share of its window rows is above ``FAULTY_SHARE_MIN`` and
``FAULTY_RATIO`` times the median entity's is taken as faulty, and its alerted rows are
left out of both the fit and the gate's holdout (the gate checks the candidate's
calibration on normal data). When more than half the entities qualify the alerting is
fleet-wide, an operating point to learn (or a window the alerted-fraction rule refuses),
and nothing is left out. A single series has no others to compare with: its window is
refused above ``retrain.max_alerted_fraction_one_series`` instead (``retrain.job``).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

import numpy as np

from detector.model.bundle import ModelBundle
from detector.retrain.window import SampleRow

FAULTY_SHARE_MIN = 0.1
FAULTY_RATIO = 3.0
# This many consecutive alerted samples of one entity that the fleet does not share are
# a fault of that machine (``learnable``).
RUN_MIN = 3
# A window whose largest entity holds this share of the rows is judged as one series.
ONE_SERIES_SHARE = 0.9


def faulty_entities(rows: list[SampleRow]) -> set[str]:
    flags: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        flags[r.entity or ""].append(r.alerted)
    if len(flags) < 2:
        return set()
    shares = {e: sum(f) / len(f) for e, f in flags.items()}
    typical = statistics.median(shares.values())
    faulty = {
        e for e, share in shares.items() if share > max(FAULTY_SHARE_MIN, FAULTY_RATIO * typical)
    }
    return faulty if len(faulty) <= len(shares) / 2 else set()


def one_series_window(rows: list[SampleRow]) -> bool:
    """Whether one entity (events without one count as one) holds nearly all the window: a
    few rows of another must not make a single series pass for a fleet."""
    sizes = Counter(r.entity or "" for r in rows)
    return max(sizes.values(), default=0) >= ONE_SERIES_SHARE * len(rows)


def learnable(rows: list[SampleRow], faulty: set[str]) -> list[bool]:
    """Per row of a time-ordered window: may it be fitted and held out?

    Not the alerted rows of ``faulty`` entities, and not a short fault of one machine:
    ``RUN_MIN`` or more of an entity's consecutive samples alerting while most of the
    other entities present at the time do not alert on more than ``FAULTY_SHARE_MIN`` of
    their rows of that span (their tail alerts meanwhile do not make a long fault the
    fleet's). Such a run is far too small a share of
    the machine's window for ``faulty_entities`` to see, yet fitted it teaches the
    candidate that fault's shape (measured on the synthetic fleet: a model retrained on
    six earlier 20-event faults caught 2 of 20 events of the next, the model before it
    15). Alerts of most of the fleet at once are an operating point and stay; so do
    isolated alerts (the calibrated tail: leaving those out would narrow every retrain).
    """
    keep = [not (r.alerted and (r.entity or "") in faulty) for r in rows]
    by_entity: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_entity[r.entity or ""].append(i)
    if len(by_entity) < 2:
        return keep
    for entity, idx in by_entity.items():
        run: list[int] = []
        for i in [*idx, -1]:  # -1 ends the last run
            if i >= 0 and rows[i].alerted:
                run.append(i)
                continue
            if len(run) >= RUN_MIN and not _shared(rows, entity, run[0], run[-1]):
                for j in run:
                    keep[j] = False
            run = []
    return keep


def _shared(rows: list[SampleRow], entity: str, first: int, last: int) -> bool:
    """Whether most other entities with rows in ``rows[first:last + 1]`` alerted there too:
    on more than ``FAULTY_SHARE_MIN`` of their rows of that span (a tail alert of another
    machine now and then during a long run is not the fleet sharing it; a fleet-wide shift
    alerting on a third of each machine's rows is)."""
    seen: Counter[str] = Counter()
    alerted: Counter[str] = Counter()
    for r in rows[first : last + 1]:
        e = r.entity or ""
        if e != entity:
            seen[e] += 1
            alerted[e] += r.alerted
    sharing = sum(alerted[e] > FAULTY_SHARE_MIN * n for e, n in seen.items())
    return bool(seen) and sharing > len(seen) / 2


# A window-wide constant is a stuck sensor unless the feature held that value in at least
# this share of the current model's calibration rows (a counter that is nearly always 0).
USUAL_VALUE_SHARE = 0.99


def usual_value(bundle: ModelBundle, name: str, value: float) -> bool:
    """Whether ``value`` is what ``name`` nearly always was in ``bundle``'s calibration rows."""
    spec = bundle.spec
    if name not in spec.numeric or bundle.calibration_rows.size == 0:
        return False
    j = spec.numeric.index(name)
    raw = float(np.log1p(value)) if name in spec.log1p else float(value)
    z = (raw - float(bundle.scaler.mean_[j])) / float(bundle.scaler.scale_[j])
    share = float(np.isclose(bundle.calibration_rows[:, j], z, rtol=0.0, atol=1e-9).mean())
    return share >= USUAL_VALUE_SHARE
