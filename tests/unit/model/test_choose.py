"""features.temporal_auto: raw levels or level-invariant forms, chosen on training rows."""

from __future__ import annotations

import numpy as np

from detector.model.choose import describe_choice, train_table
from tests.unit.conftest import small_settings


def fleet(offset_sd: float, n_entities: int = 8, steps: int = 400, seed: int = 0) -> tuple:
    """Machines with two coupled sensors around a level of their own (sd ``offset_sd``)."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, offset_sd, n_entities)
    rows, ents, times = [], [], []
    for t in range(steps):
        load = rng.normal(0, 1, n_entities)
        for m in range(n_entities):
            rows.append(
                {
                    "temp": 40 + offsets[m] + load[m] + rng.normal(0, 0.3),
                    "flow": 10 + 2 * load[m] + rng.normal(0, 0.3),
                }
            )
            ents.append(f"m-{m:02d}")
            times.append(1_795_000_000_000 + 60_000 * t)
    return rows, ents, times


def test_machines_each_at_a_level_of_their_own_get_the_level_invariant_forms() -> None:
    # Given a fleet whose machines sit 5 noise sigmas apart, and temporal_auto on
    s = small_settings(features={"temporal_auto": True})
    rows, ents, times = fleet(offset_sd=5.0)
    # When training chooses its features
    bundle = train_table(rows, ents, times, s)
    choice = bundle.summary["temporal_choice"]
    # Then the raw model floods on the machines it never saw, and the level-invariant
    # forms are taken, with the figures that decided it in the summary
    configured = choice["candidates"]["as configured"]
    assert configured["held_out_entities_alert_rate"] > choice["limit_alert_rate"]
    assert choice["chosen"] == "level-invariant"
    assert "temp__dev" in bundle.spec.numeric and "temp" not in bundle.spec.numeric
    assert choice["held_out_entities"] == ["m-03", "m-07"]
    assert "level-invariant (alert rates on held-out normal rows" in describe_choice(choice)


def test_a_fleet_that_shares_one_level_keeps_its_raw_features() -> None:
    # Given machines that share one level
    s = small_settings(features={"temporal_auto": True})
    rows, ents, times = fleet(offset_sd=0.0)
    # When training chooses
    bundle = train_table(rows, ents, times, s)
    # Then the raw model carries over to unseen machines and stays
    choice = bundle.summary["temporal_choice"]
    assert choice["chosen"] == "as configured"
    assert (
        choice["candidates"]["as configured"]["held_out_entities_alert_rate"]
        <= choice["limit_alert_rate"]
    )
    assert bundle.spec.numeric == ("temp", "flow")


def test_a_single_series_keeps_its_features_and_shows_the_time_ordered_figure() -> None:
    # Given one series (no entity column) whose level wanders during training
    s = small_settings(features={"temporal_auto": True})
    rows, _, times = fleet(offset_sd=0.0, n_entities=1, steps=2_000)
    for i, r in enumerate(rows):
        r["temp"] += 3.0 * i / len(rows)
    # When training chooses
    bundle = train_table(rows, None, times, s)
    choice = bundle.summary["temporal_choice"]
    # Then nothing is held out by entity, so the levels are kept (they may be what a fault
    # changes), and the newest rows' alert rate is there for the user to read
    assert choice["chosen"] == "as configured"
    assert "fewer than 4 entities" in choice["why"]
    assert choice["candidates"]["as configured"]["newest_alert_rate"] > 0.0
    assert "on the newest 20%" in describe_choice(choice)


def test_declared_numeric_features_with_temporal_windows_are_chosen_among(tmp_path) -> None:
    # Given features declared by name, with temporal windows and the raw level left out
    s = small_settings(
        features={
            "temporal_auto": True,
            "numeric": ["temp", "flow"],
            "temporal": {"temp": 5},
            "temporal_raw": False,
        }
    )
    rows, ents, times = fleet(offset_sd=5.0)
    # When training chooses (it used to fail: the derived names were looked up in the file)
    bundle = train_table(rows, ents, times, s)
    choice = bundle.summary["temporal_choice"]
    # Then the level-invariant candidate covers both features (temp's left-out level too),
    # and the configured features stay: with temp's level already left out they carry over
    # to the machines held out
    assert {"temp__dev", "flow__dev"} <= set(choice["candidates"]["level-invariant"]["features"])
    assert choice["chosen"] == "as configured"
    configured = choice["candidates"]["as configured"]
    assert configured["held_out_entities_alert_rate"] <= choice["limit_alert_rate"]
    assert "temp" not in bundle.spec.numeric and "flow" in bundle.spec.numeric


def test_a_retrain_keeps_the_temporal_plan_training_chose(tmp_path) -> None:
    from detector.registry.store import ModelRegistry
    from detector.retrain.job import retrain_once
    from detector.retrain.window import SampleRow

    # Given a level-invariant model chosen by training, in service
    s = small_settings(
        features={"temporal_auto": True},
        registry={"path": str(tmp_path)},
        retrain={"min_samples": 500},
    )
    rows, ents, times = fleet(offset_sd=5.0)
    bundle = train_table(rows, ents, times, s)
    assert bundle.summary["temporal_choice"]["chosen"] == "level-invariant"
    ModelRegistry(s.registry).publish(bundle)
    # When it is retrained on samples (which carry the derived values, as the service
    # samples them) with settings that do not name any temporal feature
    from detector.features.temporal import augment_offline

    augmented, _ = augment_offline(rows, ents, times, bundle.spec.temporal_plan)
    window = [
        SampleRow(r, e, t, False, bundle.version)
        for r, e, t in list(zip(augmented, ents, times, strict=True))[-2_000:]
    ]
    out = retrain_once(s, window=window)
    # Then the candidate reads the same temporal features, so the service keeps its state
    assert out.outcome in ("promoted", "rejected"), out.reason
    candidate = ModelRegistry(s.registry).load(out.version)
    assert candidate.spec.temporal_plan == bundle.spec.temporal_plan
