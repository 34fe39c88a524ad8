"""features.temporal_peer: a fleet's shared change cancels, one machine's fault stands out."""

from __future__ import annotations

import numpy as np
import pytest

from detector.errors import DataError
from detector.features.spec import FeatureSpec, infer_spec
from detector.features.temporal import MIN_PEERS, TemporalPlan, TemporalState, augment_offline
from tests.unit.conftest import small_settings

DEV = TemporalPlan({"t": 10}, ("dev", "std"), halflife_events=30.0)
PEER = TemporalPlan({"t": 10}, ("dev", "std"), halflife_events=30.0, peer=True)


def fleet_devs(plan: TemporalPlan, values: np.ndarray) -> np.ndarray:
    """t__dev of every (step, machine), the machines reporting in turn at each step."""
    steps, machines = values.shape
    state = TemporalState(plan)
    rows = state.augment(
        [f"m{m}" for _ in range(steps) for m in range(machines)],
        [{"t": float(v)} for v in values.reshape(-1)],
    )
    return np.array([np.nan if r["t__dev"] is None else r["t__dev"] for r in rows]).reshape(
        steps, machines
    )


def test_a_shift_the_whole_fleet_shares_cancels_and_one_machines_fault_stands_out() -> None:
    # Given 8 machines with noise 0.5 around their own levels; at step 500 the whole fleet
    # shifts by 2.5 (5 noise sigmas), and at step 800 machine 3 alone runs 25 high for 20 steps
    rng = np.random.default_rng(5)
    values = rng.normal(0, 0.5, (1_200, 8)) + rng.normal(40, 3, 8)
    values[500:] += 2.5
    values[800:820, 3] += 25.0
    # When the dev form is computed per machine alone, and relative to the peers
    alone, peers = fleet_devs(DEV, values), fleet_devs(PEER, values)
    # Then alone, every machine deviates by the shift until its baseline takes it (30 steps)
    assert (np.abs(alone[501:531]) > 1.5).mean() > 0.8
    # ...relative to its peers hardly any does after the step in which the shift arrived
    # (left: the machines of the step in which the baselines take it that report before
    # the median turns, as in the shift's own step)
    assert (np.abs(peers[501:560]) > 1.5).mean() < 0.02
    assert (np.abs(peers[500, :4]) > 1.5).all()  # the first half of the fleet saw it first
    # ...while machine 3's fault is as large against its peers as against its own past
    assert peers[800:820, 3].min() > 20.0
    assert np.abs(np.delete(peers[800:820], 3, axis=1)).max() < 2.0


def test_peer_forms_are_missing_until_enough_other_machines_reported() -> None:
    # Given a plan with peers, and machines whose windows are warm from their first event
    plan = TemporalPlan({"t": 2}, ("diff",), peer=True)
    state = TemporalState(plan)
    warm = [f"m{m}" for m in range(5)]
    state.augment(warm, [{"t": 0.0}] * 5)
    # When the machines report again, one after the other
    out = state.augment(warm, [{"t": float(m)} for m in range(5)])
    # Then the first MIN_PEERS have too few peers: missing and counted as warm-up
    diffs = [r["t__diff"] for r in out]
    assert diffs[:MIN_PEERS] == [None] * MIN_PEERS
    # ...the next compare with the median of the others' latest diffs
    assert diffs[MIN_PEERS] == MIN_PEERS - 1.0  # own diff 3, peers' diffs 0, 1, 2
    assert state.warmup_rows == 5 + MIN_PEERS
    # ...and a rebalance forgets the peers too
    state.reset()
    assert state.augment(["m0"], [{"t": 1.0}])[0]["t__diff"] is None


@pytest.mark.parametrize("entities", [None, ["a", "b", "c"], [None, "", "a", "b"]])
def test_peer_forms_refuse_data_with_too_few_entities(entities) -> None:
    # Given a table with fewer than MIN_PEERS + 1 entities (None and "" are one series)
    n = 40
    rows = [{"t": float(i)} for i in range(n)]
    ents = None if entities is None else [entities[i % len(entities)] for i in range(n)]
    # When its peer forms are asked for, then the error names the setting and the count
    with pytest.raises(DataError, match=r"features.temporal_peer .* the data has [13] entit"):
        augment_offline(rows, ents, list(range(n)), PEER)


def test_the_peer_flag_survives_the_bundle_and_is_described() -> None:
    # Given settings asking for peer-relative level-invariant forms
    s = small_settings(
        features={
            "temporal": {"t": 5},
            "temporal_forms": ["diff", "dev"],
            "temporal_raw": False,
            "temporal_peer": True,
        }
    )
    assert s.features.temporal_plan.peer
    rows = [{"t": float(i), "t__diff": 1.0, "t__dev": 0.5} for i in range(60)]
    # When the spec is inferred and round-trips through its dict form
    spec = infer_spec(rows, s.features)
    again = FeatureSpec.from_dict(spec.to_dict())
    # Then the plan keeps its peers, and the column table says what they mean
    assert again.temporal_plan == spec.temporal_plan and again.temporal_plan.peer
    assert "other entities' median" in (again.temporal_plan.describe("t__dev") or "")
    # ...and a spec written before the flag existed reads as without peers
    old = {k: v for k, v in spec.to_dict().items() if k != "temporal_peer"}
    assert not FeatureSpec.from_dict(old).temporal_plan.peer
