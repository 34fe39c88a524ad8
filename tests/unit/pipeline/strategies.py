"""Hypothesis strategies for records: arbitrary bytes, JSON text no encoder would write
(deep, wide, huge numbers, NaN/Infinity, -0.0, subnormals, duplicate keys, unicode), event
and record timestamps, entity ids."""

from __future__ import annotations

import datetime
from typing import Any

import orjson
from hypothesis import strategies as st

from detector.pipeline import RecordSlice

FEATURES = ["a", "b", "c", "d"]


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
    st.datetimes(timezones=st.just(datetime.UTC)).map(
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
