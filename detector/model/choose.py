"""Raw levels or level-invariant forms: chosen on the training rows, by held-out validation.

With ``features.temporal_auto`` training fits two candidates on part of its own data and
scores the rest:

* **as configured**: the features the settings name (raw levels, ``features.temporal``);
* **level-invariant**: every numeric feature's ``diff``, rolling ``std`` and ``dev`` (its
  deviation from the entity's robust baseline), window 10, the raw level left out
  (docs/temporal-features.md).

Held out are every row of a quarter of the entities (every fourth by name, when there are
``MIN_ENTITIES`` or more) and, of the others, the newest ``VALIDATION_FRACTION`` by event
time. All of it is normal data (labelled anomalies are left out), so a model that carries
over alerts on about the target share of it; both shares are in the model card.

The rule reads the held-out **entities** only. The level-invariant candidate is taken when
the configured one alerts on them at more than twice the target and more than
``BAND_SE`` binomial standard errors above it, and the level-invariant one alerts less:
then each machine has a level of its own that the raw model learnt by heart, and a new
machine (or one recalibrated) would flood. A drift in time inside the training rows is not
taken as such evidence: where levels are what faults change (a valve closing, a pump
losing pressure), level-invariant forms miss them, and normal data alone cannot tell the
two cases apart. So a single series keeps its configured features, and the time-ordered
figure is shown for the user to decide. Nothing here reads test data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detector.features.spec import infer_spec
from detector.features.temporal import augment_offline, derived_names, sortable_time
from detector.model.bundle import ModelBundle
from detector.model.scorer import Scorer
from detector.model.train import ProgressCallback, train
from detector.settings import Settings

log = logging.getLogger(__name__)

LEVEL_INVARIANT_FORMS = ["diff", "std", "dev"]
AUTO_WINDOW = 10
VALIDATION_FRACTION = 0.2
MIN_ENTITIES = 4
BAND_SE = 3.0


def level_invariant(settings: Settings, numeric: Sequence[str], peer: bool = False) -> Settings:
    """``settings`` with the level-invariant forms of ``numeric`` instead of raw levels
    (with ``peer``, relative to the other entities: features.temporal_peer)."""
    features = settings.features.model_copy(
        update={
            "temporal": dict.fromkeys(numeric, AUTO_WINDOW),
            "temporal_forms": list(LEVEL_INVARIANT_FORMS),
            "temporal_raw": False,
            "temporal_peer": peer,
        }
    )
    return settings.model_copy(update={"features": features})


def train_table(
    rows: Sequence[Mapping[str, Any]],
    entities: Sequence[str | None] | None,
    times: Sequence[Any] | None,
    settings: Settings,
    *,
    labels: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    column_notes: Mapping[str, str] | None = None,
) -> ModelBundle:
    """Train on a table (rows before temporal features), choosing the features first when
    ``features.temporal_auto`` asks for it; the choice is in the summary."""
    chosen, record, data = settings, None, None
    if settings.features.temporal_auto:
        if times is None:
            record = {"chosen": "as configured", "why": "the data has no time column"}
        else:
            chosen, record, data = _choose(rows, entities, times, settings, labels)
    if data is None:
        plan = chosen.features.temporal_plan
        data = augment_offline(rows, entities, times, plan)[0] if plan else rows
    bundle = train(data, chosen, labels=labels, progress=progress, column_notes=column_notes)
    if record is not None:
        bundle.summary["temporal_choice"] = record
    return bundle


def _choose(
    rows: Sequence[Mapping[str, Any]],
    entities: Sequence[str | None] | None,
    times: Sequence[Any],
    settings: Settings,
    labels: np.ndarray | None,
) -> tuple[Settings, dict[str, Any], Sequence[Mapping[str, Any]] | None]:
    """The settings to train with, the record of the choice, and the rows with the chosen
    candidate's temporal features (computed here already; None when not computed)."""
    n = len(rows)
    normal = np.ones(n, dtype=bool) if labels is None else np.asarray(labels) == 0
    ents = list(entities) if entities is not None else [None] * n
    names = sorted({str(e) for e in ents if e is not None})
    held = set(names[3::4]) if len(names) >= MIN_ENTITIES else set()
    of_held = np.array([e is not None and str(e) in held for e in ents])
    keys = np.array([sortable_time(t) for t in times], dtype=float)
    finite = np.isfinite(keys) & ~of_held
    cut = float(np.quantile(keys[finite], 1.0 - VALIDATION_FRACTION)) if finite.any() else np.inf
    newest = ~of_held & (keys >= cut)
    # The numeric columns of the rows as read (no temporal features yet, raw levels in).
    label = settings.training.label_column
    derived = set(derived_names(settings.features.temporal_plan))
    declared = settings.features.numeric
    plain = settings.features.model_copy(
        update={
            "temporal": {},
            "temporal_raw": True,
            "numeric": None if declared is None else [f for f in declared if f not in derived],
        }
    )
    spec = infer_spec(rows, plain, exclude=[label] if label else [])
    numeric = list(spec.numeric) + [f for f in settings.features.temporal if f not in spec.numeric]
    candidates = {"as configured": settings}
    if numeric:
        candidates["level-invariant"] = level_invariant(
            settings, numeric, settings.features.temporal_peer
        )
    fit_idx = np.flatnonzero(~of_held & ~newest & normal).tolist()
    if len(fit_idx) < n // 4:
        return settings, {"chosen": "as configured", "why": "too few rows to validate"}, None
    figures: dict[str, dict[str, Any]] = {}
    augmented: dict[str, Sequence[Mapping[str, Any]]] = {}
    target = 0.0
    for name, s in candidates.items():
        plan = s.features.temporal_plan
        data = augment_offline(rows, entities, times, plan)[0] if plan else rows
        augmented[name] = data
        bundle = train([data[i] for i in fit_idx], s)
        target = bundle.thresholds.alert_rate
        scorer = Scorer(bundle, s.features, s.thresholds)
        figures[name] = {"features": list(bundle.spec.numeric) + list(bundle.spec.categorical)}
        for part, mask in (("newest", newest), ("held_out_entities", of_held)):
            idx = np.flatnonzero(mask & normal).tolist()
            if not idx:
                continue
            result = scorer.score([data[i] for i in idx])
            # Rows without one feature present (an entity's first events, when every feature
            # is temporal) get no real score: they would count as normal.
            n_numeric = len(scorer.spec.numeric)
            judged = ~np.isnan(result.encoded[:, :n_numeric]).all(axis=1) | bool(
                scorer.spec.categorical
            )
            scored = np.isfinite(result.log_likelihood) & judged
            figures[name][f"{part}_rows"] = int(scored.sum())
            figures[name][f"{part}_alert_rate"] = float((result.severity[scored] > 0).mean())
    configured = figures["as configured"]
    other = figures.get("level-invariant")
    chosen, limit = "as configured", None
    if held and other is not None and "held_out_entities_alert_rate" in configured:
        n_val = max(1, configured["held_out_entities_rows"])
        limit = target + max(target, BAND_SE * math.sqrt(target * (1.0 - target) / n_val))
        rate = configured["held_out_entities_alert_rate"]
        if rate > limit and other.get("held_out_entities_alert_rate", 1.0) < rate:
            chosen = "level-invariant"
    record = {
        "chosen": chosen,
        "why": (
            "rule on held-out entities"
            if held
            else f"fewer than {MIN_ENTITIES} entities: none held out, the configured features kept"
        ),
        "target_alert_rate": target,
        "limit_alert_rate": limit,
        "held_out_entities": sorted(held),
        "candidates": figures,
    }
    log.info("temporal features: %s", describe_choice(record))
    return candidates[chosen], record, augmented[chosen]


def describe_choice(choice: dict[str, Any]) -> str:
    """One line for training's temporal-feature choice."""
    if "candidates" not in choice:
        return f"{choice['chosen']} ({choice['why']})"

    def rate(c: dict[str, Any], part: str) -> str:
        v = c.get(f"{part}_alert_rate")
        return "-" if v is None else f"{100 * v:.2f}%"

    rates = "; ".join(
        f"{name}: {rate(c, 'held_out_entities')} on held-out entities, "
        f"{rate(c, 'newest')} on the newest {VALIDATION_FRACTION:.0%}"
        for name, c in choice["candidates"].items()
    )
    limit = choice.get("limit_alert_rate")
    rule = (
        f"the configured features are kept up to {100 * limit:.2f}% on held-out entities"
        if limit is not None
        else choice["why"]
    )
    return f"{choice['chosen']} (alert rates on held-out normal rows: {rates}; {rule})"
