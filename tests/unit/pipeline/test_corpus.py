"""The nasty-record corpus through the per-batch path: each record ends where it says.

The same corpus goes through the real broker and service in
``tests/integration/test_nasty_records.py``.
"""

from __future__ import annotations

import orjson
import pytest

from detector.events import EventParser
from detector.model.scorer import Scorer
from detector.model.train import train
from detector.pipeline import PipelineState, RecordSlice, process
from detector.pipeline.letters import usable_bytes
from detector.settings import EventSettings
from detector.stream.alerts import Cooldown
from tests.integration.streams import FEATURES, normal_rows
from tests.nasty import load_corpus
from tests.unit.conftest import small_settings
from tests.unit.pipeline.outcomes import check_invariants, ends

MAX_REQUEST_SIZE = 1_048_576
CORPUS = load_corpus()


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    rows = [dict(zip(FEATURES, r, strict=True)) for r in normal_rows(4_000, seed=0).tolist()]
    return Scorer(train(rows, small_settings()))


def corpus_records() -> RecordSlice:
    n = len(CORPUS)
    return RecordSlice(
        ["events"] * n,
        [0] * n,
        list(range(n)),
        [1_795_000_000_000] * n,
        [c.key for c in CORPUS],
        [c.value for c in CORPUS],
    )


@pytest.mark.parametrize("batched", [True, False], ids=["one-batch", "record-by-record"])
def test_every_nasty_record_ends_where_the_corpus_says(scorer, batched) -> None:
    # Given the corpus, as one batch or one record per batch
    records = corpus_records()
    state = PipelineState(EventParser(EventSettings()), Cooldown(0))
    # When the pipeline handles it
    if batched:
        outcome = process(records, scorer, state, max_request_size=MAX_REQUEST_SIZE)
        check_invariants(outcome, records, usable_bytes(MAX_REQUEST_SIZE))
        got = ends(outcome)
    else:
        got = {}
        for i in range(len(records)):
            one = RecordSlice.of(records, i, i + 1)
            outcome = process(one, scorer, state, max_request_size=MAX_REQUEST_SIZE)
            check_invariants(outcome, one, usable_bytes(MAX_REQUEST_SIZE))
            got[i] = ends(outcome)[0]
    # Then each record is scored, alerted or dead-lettered with the expected reason
    assert {c.name: got[i] for i, c in enumerate(CORPUS)} == {c.name: c.expect for c in CORPUS}


def test_the_corpus_holds_every_case_of_the_issue() -> None:
    names = " | ".join(c.name for c in CORPUS)
    for case in (
        "-1e308",
        "entity nested 1000",
        "feature nested 1000",
        "ts nested 1000",
        "ts 1e15",
        "ts -1e15",
        "ts 1e300",
        "ts 2^63-1",
        "3 MiB",
        "10 MB string",
        "empty",
        "not JSON",
        "JSON array",
        "NUL bytes",
        "invalid UTF-8",
        "duplicate keys",
        "bool as feature",
        "huge int",
    ):
        assert case in names, case
    assert all(orjson.loads(c.value) is not None for c in CORPUS if c.expect in ("scored", "alert"))
