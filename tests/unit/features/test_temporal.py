"""Per-entity temporal features: identical offline and streaming, bounded, and worth it."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from detector.demo.fleet import FEATURES, FLOW, PRES, FleetSpec, simulate
from detector.features.temporal import (
    FORMS,
    MIN_PEERS,
    TemporalPlan,
    TemporalState,
    augment_offline,
)
from detector.model.scorer import Scorer
from detector.model.train import train
from tests.unit.conftest import small_settings

WINDOWS = {"flow_m3_h": 20, "pressure_bar": 20}


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p1", "p2", "p3", "p4", "p5"]),
            st.one_of(st.none(), st.floats(-1e3, 1e3)),
        ),
        max_size=80,
    ),
    st.integers(1, 10),
    st.booleans(),
)
def test_training_and_streaming_compute_the_same_values(events, batch_size, peer) -> None:
    # Given events of up to five entities, interleaved, in arrival (= time) order
    rows = [{"x": v} for _, v in events]
    entities = [e for e, _ in events]
    windows = TemporalPlan({"x": 3}, FORMS, halflife_events=4.0, peer=peer)
    assume(not peer or len(set(entities)) > MIN_PEERS)
    # When the offline path sorts them by time, and the stream sees them in batches
    offline, _ = augment_offline(rows, entities, list(range(len(rows))), windows)
    state = TemporalState(windows)
    streamed = []
    for i in range(0, len(rows), batch_size):
        streamed += state.augment(entities[i : i + batch_size], rows[i : i + batch_size])
    # Then every derived value is identical
    assert streamed == offline


def test_state_stays_bounded_with_many_entities_and_warms_up_again() -> None:
    state = TemporalState({"x": 5}, max_entities=100)
    for i in range(10_000):
        state.augment([f"e{i}"], [{"x": float(i)}])
    assert len(state) == 100
    # A new entity (or one rebuilt after a rebalance) is missing its derived features until
    # it has N values: counted as warm-up, scored point-wise.
    state.reset()
    out = state.augment(["a"] * 6, [{"x": float(v)} for v in range(6)])
    assert [r["x__std5"] is None for r in out] == [True] * 4 + [False] * 2
    assert state.warmup_rows == 10_000 + 4
    assert out[-1]["x__mean5"] == 3.0 and out[-1]["x__diff"] == 1.0


def test_state_stays_within_its_bound_under_a_flood_of_a_million_entities() -> None:
    # Given temporal state that keeps at most 1,000 entities
    state = TemporalState({"x": 3}, max_entities=1_000)
    # When 1,000,000 distinct entities each send one event, in batches of 1,000
    for start in range(0, 1_000_000, 1_000):
        ids = [f"e{i}" for i in range(start, start + 1_000)]
        state.augment(ids, [{"x": 1.0}] * 1_000)
    # Then it holds exactly its bound and counts every entity it had to forget
    assert len(state) == 1_000
    assert state.evictions == 1_000_000 - 1_000


def fleet_table(x: np.ndarray, start: int) -> tuple[list[dict], list[str], list[int]]:
    rows, ents, times = [], [], []
    for s in range(x.shape[0]):
        for p in range(x.shape[1]):
            rows.append(dict(zip(FEATURES, x[s, p].tolist(), strict=True)))
            ents.append(f"pump-{p}")
            times.append(start + s)
    return rows, ents, times


def test_stuck_sensor_and_slow_drift_are_caught_with_temporal_features_and_missed_without() -> None:
    # Given a fleet of 10 pumps; in the test period pump 2's flow sensor freezes at a
    # plausible value and pump 5's pressure sensor drifts slowly (+0.15 bar over 300 steps,
    # within its normal range at any single reading)
    spec = FleetSpec(n_pumps=10, seed=3)
    n_train, n_test = 1500, 400
    x = simulate(spec, n_train + n_test)
    test = x[n_train:].copy()
    test[100:, 2, FLOW] = test[99, 2, FLOW]
    test[100:, 5, PRES] += np.linspace(0, 0.15, n_test - 100)
    recall = {}
    for name, windows in (("point-wise", {}), ("temporal", WINDOWS)):
        s = small_settings(features={"temporal": windows}, model={"n_components_max": 6})
        rows, ents, times = fleet_table(x[:n_train], 0)
        rows, _ = augment_offline(rows, ents, times, windows) if windows else (rows, 0)
        bundle = train(rows, s)
        trows, tents, ttimes = fleet_table(test, n_train)
        trows, _ = augment_offline(trows, tents, ttimes, windows) if windows else (trows, 0)
        sev = Scorer(bundle, s.features).score(trows).severity.reshape(n_test, 10)
        recall[name] = (
            float((sev[150:, 2] > 0).mean()),
            float((sev[250:, 5] > 0).mean()),
            float((np.delete(sev, [2, 5], axis=1) > 0).mean()),
        )
    # Then point-wise scoring misses both, the temporal features catch both, at ~1% false alerts
    stuck_pw, drift_pw, _ = recall["point-wise"]
    stuck_t, drift_t, false_t = recall["temporal"]
    assert stuck_pw < 0.2 and drift_pw < 0.25, recall
    assert stuck_t > 0.8 and drift_t > 0.7, recall
    assert false_t < 0.02, recall


def test_the_baseline_absorbs_a_lasting_shift_but_barely_follows_a_short_fault() -> None:
    # Given one sensor with noise 0.5 around 40, the dev form with a 30-event half-life
    rng = np.random.default_rng(3)
    state = TemporalState(TemporalPlan({"t": 10}, ("dev",), halflife_events=30.0))
    noise = rng.normal(0, 0.5, 2_000)
    level = np.full(2_000, 40.0)
    level[400:420] += 25.0  # a 20-event fault, 50 noise sigmas high
    level[1_000:] += 2.5  # then a lasting shift of the level, 5 sigmas
    devs = [r["t__dev"] for r in state.augment(["a"] * 2_000, [{"t": v} for v in level + noise])]
    # Then during the fault the deviation is the fault's size...
    assert min(devs[400:420]) > 20.0
    # ...after it the baseline has not followed it: no long echo of deviations
    assert max(abs(d) for d in devs[425:450]) < 2.0
    # ...the shift shows at first, then is absorbed within a few half-lives
    assert devs[1_000] > 1.5
    assert np.mean(np.abs(devs[1_150:1_400])) < 0.6


def test_dev_form_spec_leaves_the_raw_level_out_and_survives_the_bundle() -> None:
    from detector.features.spec import FeatureSpec, describe_columns, infer_spec

    # Given settings asking for level-invariant forms only
    s = small_settings(
        features={
            "temporal": {"t": 5},
            "temporal_forms": ["diff", "dev"],
            "temporal_raw": False,
            "temporal_halflife_events": 12.0,
        }
    )
    rows = [{"t": float(i), "u": 1.0 + i % 3, "t__diff": 1.0, "t__dev": 0.5} for i in range(60)]
    # When the spec is inferred
    spec = infer_spec(rows, s.features)
    # Then the raw t is not a feature, its forms are, and the plan round-trips
    assert set(spec.numeric) == {"u", "t__diff", "t__dev"} and "t" not in spec.features
    again = FeatureSpec.from_dict(spec.to_dict())
    assert again.temporal_plan == spec.temporal_plan
    assert again.temporal_plan.forms == ("diff", "dev")
    assert again.temporal_plan.halflife_events == 12.0
    # ...and training's column table says why t is not a feature
    table = {c["column"]: c for c in describe_columns(spec, rows, s.features)}
    assert table["t"]["why"].startswith("read for its temporal features only")
    assert "half-life 12 events" in table["t__dev"]["why"]


def test_a_series_that_was_constant_accepts_a_new_level_within_a_few_half_lives() -> None:
    # Given a sensor that read exactly 40 for 3000 events (its typical deviation shrinks
    # towards 0), then moves for good to 50
    state = TemporalState(TemporalPlan({"t": 10}, ("dev",), halflife_events=30.0))
    values = [40.0] * 3_000 + [50.0] * 400
    devs = [r["t__dev"] for r in state.augment(["a"] * len(values), [{"t": v} for v in values])]
    # Then the new level is a deviation at first and absorbed within about 5 half-lives
    # (the clip is lifted once the shift outlasts one half-life; it took 1055 events before)
    assert devs[3_000] == 10.0
    settled = next(i for i, d in enumerate(devs[3_000:]) if abs(d) < 3.0)
    assert settled < 5 * 30, settled


def test_the_window_forgets_a_fault_once_it_is_over() -> None:
    # Given one sensor with noise 0.5 around 40 and a 20-event fault 25 high at 400
    rng = np.random.default_rng(4)
    values = 40.0 + rng.normal(0, 0.5, 600)
    values[400:420] += 25.0
    plan = TemporalPlan({"t": 10}, ("diff", "std"), halflife_events=30.0)
    out = TemporalState(plan).augment(["a"] * 600, [{"t": v} for v in values])
    std = np.array([r["t__std10"] for r in out[10:]])
    diff = np.array([r["t__diff"] for r in out[10:]])
    usual_std = float(np.percentile(std[:380], 99))
    usual_diff = float(np.percentile(np.abs(diff[:380]), 99))
    # Then while it lasts the window holds it (std far above usual, a jump at its start)...
    assert std[400 - 10 : 409 - 10].min() > 5 * usual_std
    assert diff[400 - 10] > 20.0
    # ...and once a value is back across the level (the first or second after the fault,
    # by the noise's sign) the events after it see no fault in their window: neither the
    # step down nor the fault's spread (all 10 used to)
    back = next(i for i in range(420, 600) if std[i - 10] < 1.5 * usual_std)
    after = slice(back - 10, 430 - 10)
    assert back <= 422, back
    assert std[after].max() < 1.5 * usual_std, std[after]
    assert np.abs(diff[after]).max() < 1.5 * usual_diff, diff[after]


def test_a_quantized_sensor_that_started_flat_keeps_a_live_baseline() -> None:
    # Given an integer-valued sensor that read exactly 20 for 40 events (its typical
    # deviation learnt as ~0), then its usual noise (1.5) rounded to whole units
    rng = np.random.default_rng(0)
    values = [20.0] * 40 + [float(round(v)) for v in rng.normal(20, 1.5, 3_000)]
    state = TemporalState(TemporalPlan({"t": 10}, ("std", "dev"), halflife_events=30.0))
    out = state.augment(["a"] * len(values), [{"t": v} for v in values])
    # Then the baseline does not freeze on that first estimate (every later value would
    # start a run and be forgotten): the rolling std reads the sensor's real spread
    stds = np.array([r["t__std10"] for r in out[-1_000:]])
    assert 1.2 < stds.mean() < 1.7, stds.mean()
