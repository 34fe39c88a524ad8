"""Event parsing: the batch fast path must equal the record-by-record reference."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.errors import BadEventError
from detector.events import EventParser, parse_time_ms
from detector.settings import EventSettings

PARSER = EventParser(EventSettings(max_record_bytes=300))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**15), 10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
events = st.fixed_dictionaries(
    {},
    optional={
        "entity": st.one_of(st.text(max_size=8), st.integers(0, 99), st.none()),
        "ts": st.one_of(
            st.integers(0, 2 * 10**12),
            st.just("2026-11-24T10:00:00Z"),
            st.just("yesterday"),
            st.booleans(),
        ),
        "values": st.one_of(
            st.dictionaries(st.sampled_from(["a", "b"]), json_values, max_size=2), json_values
        ),
    },
)
records = st.one_of(
    events.map(orjson.dumps),
    st.binary(max_size=40),
    st.just(b""),
    st.just(b"x" * 400),
    json_values.map(orjson.dumps),
)


def reference(raw: bytes):
    try:
        e = PARSER.parse(raw)
    except BadEventError as exc:
        return ("error", exc.reason)
    return (e.values, e.entity, e.event_time_ms)


@settings(max_examples=400, deadline=None)
@given(st.lists(records, max_size=12))
def test_batch_parse_equals_record_by_record(batch) -> None:
    out = PARSER.parse_batch(batch)
    for i, raw in enumerate(batch):
        expected = reference(raw)
        if expected[0] == "error":
            assert out.errors[i][0] == expected[1]
        else:
            assert i not in out.errors
            assert (out.values[i], out.entities[i], out.event_times_ms[i]) == expected


def test_time_formats() -> None:
    assert parse_time_ms(1_795_000_000_000, "ts") == 1_795_000_000_000
    assert parse_time_ms(1_795_000_000, "ts") == 1_795_000_000_000  # epoch seconds
    assert parse_time_ms("2026-11-24T10:00:00Z", "ts") == 1_795_514_400_000
    with pytest.raises(BadEventError, match="ts = 'soon'"):
        parse_time_ms("soon", "ts")


def test_flat_events_keep_entity_and_time_out_of_the_values() -> None:
    flat = EventParser(EventSettings(values_key=""))
    e = flat.parse(b'{"entity": "h1", "ts": 1795000000000, "bytes": 10, "proto": "tcp"}')
    assert e.values == {"bytes": 10, "proto": "tcp"} and e.entity == "h1"
