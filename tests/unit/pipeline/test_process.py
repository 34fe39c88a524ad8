"""Property tests of the per-batch path: whatever the bytes, every record ends exactly once.

They drive ``detector.pipeline.process`` (what the service calls for each poll) with
arbitrary bytes, arbitrary JSON text (deep, wide, huge numbers, NaN/Infinity, -0.0,
subnormals, duplicate keys, unicode), arbitrary event and record timestamps and entity ids.
"""

from __future__ import annotations

from typing import Any

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

FEATURES = ["a", "b", "c", "d"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _number_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(-(10**30), 10**30).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(
            [
                "-0.0",
                "5e-324",
                "2.2250738585072014e-308",
                "1e308",
                "-1e308",
                "1.7976931348623157e308",
                "1e400",
                "NaN",
                "Infinity",
                "-Infinity",
                "18446744073709551615",
                "-9223372036854775809",
                "0.1e-400",
                "1E+2",
                "01",
                "-",
            ]
        ),
    )


_leaf = st.one_of(
    _number_text(),
    st.text(max_size=12).map(lambda s: orjson.dumps(s).decode()),
    st.sampled_from(["true", "false", "null", '""', '"\\u0000"', '"\\ud800"', '"😀"']),
)


def _obj(items: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{orjson.dumps(k).decode()}: {v}" for k, v in items) + "}"


json_text = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        # few key names: duplicate keys are common
        st.lists(st.tuples(st.sampled_from([*FEATURES, "k", "é"]), inner), max_size=5).map(_obj),
    ),
    max_leaves=10,
)
deep = st.integers(1, 1100).map(lambda d: "[" * d + "1" + "]" * d)
entity_text = st.one_of(
    st.text(max_size=20).map(lambda s: orjson.dumps(s).decode()),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["null", "true", "1.5", "[]", '{"a": 1}']),
    deep,
)
time_text = st.one_of(
    st.integers(-(2**64), 2**64).map(str),
    st.floats().map(lambda f: repr(f) if f == f and abs(f) != float("inf") else "1e300"),
    st.datetimes(timezones=st.just(__import__("datetime").UTC)).map(
        lambda d: orjson.dumps(d.isoformat()).decode()
    ),
    st.sampled_from(
        ['"yesterday"', "true", "null", '"9999-12-31T23:59:59Z"', '"0001-01-01T00:00:00+05:00"']
    ),
    deep,
)
feature_value = st.one_of(_number_text(), _number_text(), json_text, deep)


@st.composite
def event_text(draw: st.DrawFn) -> str:
    values = [
        (f, draw(feature_value)) for f in draw(st.lists(st.sampled_from(FEATURES), max_size=6))
    ]
    items: list[tuple[str, str]] = [("values", _obj(values))]
    if draw(st.booleans()):
        items.append(("entity", draw(entity_text)))
    if draw(st.booleans()):
        items.append(("ts", draw(time_text)))
    return _obj(draw(st.permutations(items)))


@st.composite
def plausible_event(draw: st.DrawFn) -> bytes:
    """Mostly in-range numbers, so rows score and alert (the paths past parsing run)."""
    row = {f: draw(st.floats(-30, 30)) for f in FEATURES if draw(st.integers(0, 9))}
    event: dict[str, Any] = {
        "values": row,
        "entity": draw(st.sampled_from(["p1", "p2", "p3", "p4"])),
    }
    return orjson.dumps(event)


record_value = st.one_of(
    st.binary(max_size=64),
    json_text.map(str.encode),
    event_text().map(str.encode),
    event_text().map(str.encode),
    plausible_event(),
    plausible_event(),
    st.none(),
    st.just(b""),
    st.integers(600, 5000).map(lambda n: b'{"values": {"a": "' + b"x" * n + b'"}}'),
)


@st.composite
def record_batches(draw: st.DrawFn) -> RecordSlice:
    values = draw(st.lists(record_value, min_size=0, max_size=16))
    n = len(values)
    return RecordSlice(
        ["events"] * n,
        [0] * n,
        list(range(100, 100 + n)),
        draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)),
        draw(st.lists(st.one_of(st.none(), st.binary(max_size=8)), min_size=n, max_size=n)),
        values,
    )


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
