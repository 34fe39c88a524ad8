"""Property tests of the per-batch path: whatever the bytes, every record ends exactly once.

They drive ``detector.pipeline.process`` (what the service calls for each poll) with
arbitrary bytes, arbitrary JSON text (deep, wide, huge numbers, NaN/Infinity, -0.0,
subnormals, duplicate keys, unicode), arbitrary event and record timestamps and entity ids.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.events import EventParser
from detector.features.temporal import TemporalState
from detector.model.scorer import Scorer
from detector.pipeline import PipelineState, RecordSlice, process
from detector.pipeline.letters import usable_bytes
from detector.settings import EventSettings
from detector.stream.alerts import Cooldown
from tests.unit.conftest import as_rows, mixture_sample
from tests.unit.pipeline.outcomes import check_invariants, ends
from tests.unit.pipeline.strategies import record_batches

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fresh_state(cooldown_s: float, temporal: bool) -> PipelineState:
    return PipelineState(
        EventParser(EventSettings(max_record_bytes=4096)),
        Cooldown(cooldown_s, max_entities=3),
        TemporalState({"a": 3}, max_entities=3) if temporal else None,
    )


@pytest.fixture(scope="module")
def scorer(small_bundle) -> Scorer:
    return Scorer(small_bundle)


@SETTINGS
@given(
    st.lists(record_batches(), min_size=1, max_size=3),
    st.sampled_from([2048, 4096, 1 << 20]),
    st.sampled_from([0.0, 60.0]),
    st.booleans(),
)
def test_every_record_ends_as_a_score_or_a_dead_letter(
    scorer, batches, max_request, cooldown_s, temporal
) -> None:
    # Given any batches of records, a producer limit, cooldown on or off, temporal state or not
    state = fresh_state(cooldown_s, temporal)
    for records in batches:
        # When the pipeline handles each batch
        outcome = process(records, scorer, state, max_request_size=max_request)
        # Then nothing escaped, and every record is a score or a dead letter, exactly once,
        # with messages that fit the producer and dead letters that are the original bytes
        check_invariants(outcome, records, usable_bytes(max_request))
        for a in outcome.alerts:
            assert orjson.loads(a.out.value)["source"]["offset"] == records.offsets[a.position]
    assert len(state.cooldown) <= 3 and (state.temporal is None or len(state.temporal) <= 3)


@settings(max_examples=60, deadline=None)
@given(record_batches())
def test_a_batch_level_scoring_failure_is_retried_record_by_record(scorer, records) -> None:
    # Given a scorer that raises for any batch of more than one row (a batch-level failure)
    class Flaky(Scorer):
        def score(self, rows):  # type: ignore[no-untyped-def]
            if len(rows) > 1:
                raise MemoryError("the vectorized call failed")
            return super().score(rows)

    flaky = Flaky(scorer.bundle)
    # When both handle the same batch
    healthy = process(records, scorer, fresh_state(0, False), now_ms=0.0)
    retried = process(records, flaky, fresh_state(0, False), now_ms=0.0)
    # Then the retry gives every record the same end, and says it retried
    check_invariants(retried, records, usable_bytes(1 << 20))
    assert ends(retried) == ends(healthy)
    if sum(1 for r in ends(healthy).values() if r in ("scored", "alert")) > 1:
        assert "score" in retried.retried


def test_a_record_that_makes_scoring_raise_is_confined_to_itself(scorer) -> None:
    # Given a scorer with a bug triggered by one particular value, and a batch holding it
    class Buggy(Scorer):
        def score(self, rows):  # type: ignore[no-untyped-def]
            if any(r.get("a") == 13.0 for r in rows):
                raise ZeroDivisionError("the bug")
            return super().score(rows)

    rows = as_rows(mixture_sample(6, seed=9))
    rows[3]["a"] = 13.0
    values: list[bytes | None] = [orjson.dumps({"values": r}) for r in rows]
    records = RecordSlice(["events"] * 6, [0] * 6, list(range(6)), [0] * 6, [None] * 6, values)
    # When the pipeline handles it
    outcome = process(records, Buggy(scorer.bundle), fresh_state(0, False))
    # Then only that record is a dead letter, internal_error naming the exception
    check_invariants(outcome, records, usable_bytes(1 << 20))
    assert [(d.position, d.reason.value) for d in outcome.dead_letters] == [(3, "internal_error")]
    assert "ZeroDivisionError: the bug" in outcome.dead_letters[0].message


def test_any_failure_of_the_whole_batch_is_retried_one_record_at_a_time(
    scorer, monkeypatch
) -> None:
    # Given a stage with a bug outside the per-record guards, failing the first batch it sees
    import importlib

    process_module = importlib.import_module("detector.pipeline.process")
    calls = {"n": 0}
    real_alerts = process_module._alerts

    def alerts_failing_once(*args, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug outside every per-record guard")
        return real_alerts(*args, **kw)

    monkeypatch.setattr(process_module, "_alerts", alerts_failing_once)
    rows = as_rows(mixture_sample(5, seed=10))
    rows[1]["a"] = 40.0  # alerts
    values: list[bytes | None] = [
        orjson.dumps({"entity": f"e{i}", "values": r}) for i, r in enumerate(rows)
    ]
    records = RecordSlice(["events"] * 5, [0] * 5, list(range(5)), [0] * 5, [None] * 5, values)
    # When the pipeline handles the batch
    outcome = process(records, scorer, fresh_state(0, False))
    # Then it was processed again record by record, and every record still ended once
    check_invariants(outcome, records, usable_bytes(1 << 20))
    assert outcome.retried[0] == "batch" and ends(outcome)[1] == "alert"
    assert [a.position for a in outcome.alerts] == [1]
