"""Alert ids, the alert document against its schema, and the per-entity cooldown."""

from __future__ import annotations

import json
import uuid
from importlib import resources

import jsonschema
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from detector.model.scorer import Scorer
from detector.stream.alerts import (
    ALERT_ID_NAMESPACE,
    Cooldown,
    Source,
    alert_id,
    build_alert,
)
from tests.unit.conftest import as_rows, mixture_sample

SCHEMA = json.loads(resources.files("detector").joinpath("schemas/alert.schema.json").read_text())


def test_alert_id_depends_only_on_the_source_position() -> None:
    assert alert_id("events", 2, 41) == alert_id("events", 2, 41)
    assert (
        len(
            {
                alert_id("events", 2, 41),
                alert_id("events", 2, 42),
                alert_id("events", 1, 41),
                alert_id("other", 2, 41),
            }
        )
        == 4
    )


@given(
    topic=st.text(min_size=1, max_size=40),
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
)
def test_alert_id_is_the_uuid5_of_the_source_position(
    topic: str, partition: int, offset: int
) -> None:
    # Given any source position; When its alert id is derived; Then it is uuid5's, to the
    # character (the ids published before the fast path stay the same)
    expected = str(uuid.uuid5(ALERT_ID_NAMESPACE, f"{topic}/{partition}/{offset}"))
    assert alert_id(topic, partition, offset) == expected


def test_alert_document_follows_the_schema(small_bundle) -> None:
    x = mixture_sample(1, seed=30)
    x[0, 0] += 15
    rows = as_rows(x)
    del rows[0]["d"]
    scorer = Scorer(small_bundle)
    result = scorer.score(rows)
    doc = build_alert(
        result,
        0,
        source=Source("events", 0, 7, 1_795_000_000_000),
        entity="pump-1",
        event_time_ms=None,
        model_version="v1",
        feature_names=scorer.spec.features,
        missing=result.feature_missing[0],
    )
    jsonschema.validate(json.loads(json.dumps(doc)), SCHEMA)
    assert doc["missing_features"] == ["d"] and doc["event_time"] == "2026-11-18T11:06:40.000Z"
    assert doc["severity"] == "critical" and "a" in {f["feature"] for f in doc["top_features"]}
    assert np.isclose(doc["p_value"], doc["percentile"] / 100)


def test_cooldown_counts_repeats_and_reports_them_on_the_next_alert() -> None:
    cd = Cooldown(cooldown_s=60)
    assert cd.admit("p1", 1, 0) == (True, 0)
    assert cd.admit("p1", 1, 10_000) == (False, 0)  # same severity within 60 s: held
    assert cd.admit("p1", 1, 20_000) == (False, 0)
    assert cd.admit("p2", 1, 20_000) == (True, 0)  # other entities are independent
    assert cd.admit("p1", 2, 30_000) == (True, 2)  # more severe: sent, carrying the 2 held
    assert cd.admit("p1", 1, 100_000) == (True, 0)  # cooldown over
    assert Cooldown(0).admit("p1", 1, 0) == (True, 0) and Cooldown(0).enabled is False


def test_cooldown_stays_within_its_bound_under_a_flood_of_a_million_entities() -> None:
    # Given a cooldown of an hour that remembers at most 100,000 entities
    cd = Cooldown(cooldown_s=3600, max_entities=100_000)
    # When 1,000,000 distinct entities alert inside the cooldown
    for i in range(1_000_000):
        cd.admit(f"e{i}", 1, float(i))
    # Then it holds exactly its bound, and every entity past it was counted as evicted
    assert len(cd) == 100_000
    assert cd.evictions == 1_000_000 - 100_000


def test_cooldown_evicts_the_least_recently_alerted_entity() -> None:
    # Given a cooldown holding two entities, the first one active again since
    cd = Cooldown(cooldown_s=60, max_entities=2)
    cd.admit("old", 1, 0)
    cd.admit("busy", 1, 1)
    assert cd.admit("old", 1, 2) == (False, 0)  # held: "old" is now the most recent
    # When a third entity alerts
    cd.admit("new", 1, 3)
    # Then "busy" was forgotten (its next alert is sent), "old" is still cooling down
    assert cd.evictions == 1
    assert cd.admit("old", 1, 4) == (False, 0)
    assert cd.admit("busy", 1, 5) == (True, 0)
