"""Checks shared by the pipeline tests: where each record ended, and the invariants."""

from __future__ import annotations

import hashlib

import numpy as np

from detector.pipeline import BatchOutcome, Records
from detector.pipeline.letters import message_bytes
from tests.nasty import ALERT, SCORED


def ends(outcome: BatchOutcome) -> dict[int, str]:
    """Record position -> 'scored', 'alert' or the dead letter's reason."""
    out = {d.position: d.reason.value for d in outcome.dead_letters}
    sb = outcome.scored
    ll = sb.result.log_likelihood
    for row, pos in enumerate(sb.scored_index):
        if np.isfinite(ll[row]):
            out.setdefault(pos, SCORED)
    for a in outcome.alerts:
        out[a.position] = ALERT
    return out


def check_invariants(outcome: BatchOutcome, records: Records, limit_bytes: int) -> None:
    """Every record ended exactly once, as a score or a dead letter, and the counts add up."""
    n = len(records)
    dead = [d.position for d in outcome.dead_letters]
    assert len(dead) == len(set(dead)), "a record was dead-lettered twice"
    sb = outcome.scored
    scored = {
        pos for row, pos in enumerate(sb.scored_index) if np.isfinite(sb.result.log_likelihood[row])
    }
    assert scored.isdisjoint(dead), "a record was both scored and dead-lettered"
    assert scored | set(dead) == set(range(n)), "a record vanished"
    assert outcome.n == n == outcome.n_scored + len(dead) and outcome.n_scored == len(scored)
    assert {a.position for a in outcome.alerts} <= scored
    assert len(outcome.alerts) + outcome.suppressed == int((sb.result.severity > 0).sum())
    for a in outcome.alerts:
        assert message_bytes(a.out.value, a.out.key, None) <= limit_bytes
    for d in outcome.dead_letters:
        original, key = records.values[d.position], records.keys[d.position]
        out = d.out
        headers = dict(out.headers or [])
        assert message_bytes(out.value, out.key, out.headers) <= limit_bytes
        assert headers["detector.reason"] == d.reason.value.encode()
        assert headers["detector.source.offset"] == str(records.offsets[d.position]).encode()
        if not d.truncated:
            assert out.value == original and out.key == key  # bytes untouched
            continue
        whole = original or b""
        assert whole.startswith(out.value or b"") and len(out.value or b"") < len(whole) + 1
        assert headers["detector.original.size"] == str(len(whole)).encode()
        assert headers["detector.original.sha256"] == hashlib.sha256(whole).hexdigest().encode()
        assert headers["detector.truncated"] in (b"value", b"key,value")
