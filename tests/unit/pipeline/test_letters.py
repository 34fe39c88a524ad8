"""Dead letters: the original bytes when they fit the producer, a cut copy saying so when not."""

from __future__ import annotations

import hashlib

from detector.pipeline import Reason
from detector.pipeline.letters import dead_letter, message_bytes
from detector.stream.alerts import Source

SOURCE = Source("events", 3, 41, 1_795_000_000_000)


def test_a_dead_letter_that_fits_is_the_record_untouched() -> None:
    d = dead_letter(0, b"not json", b"k", SOURCE, Reason.INVALID_JSON, "bad", 4096)
    headers = dict(d.out.headers or [])
    assert (d.out.value, d.out.key, d.truncated) == (b"not json", b"k", False)
    assert headers["detector.reason"] == b"invalid_json" and "detector.truncated" not in headers


def test_an_oversize_value_is_cut_to_fit_with_its_size_and_sha256() -> None:
    # Given a record four times the budget
    value = bytes(range(256)) * 64  # 16 KiB
    # When it is dead-lettered under a 4 KiB budget
    d = dead_letter(0, value, b"key", SOURCE, Reason.TOO_LARGE, "too big", 4096)
    h = dict(d.out.headers or [])
    # Then the message fits, starts with the original bytes, and says what was cut
    assert d.truncated and message_bytes(d.out.value, d.out.key, d.out.headers) <= 4096
    assert value.startswith(d.out.value or b"") and d.out.key == b"key"
    assert h["detector.truncated"] == b"value"
    assert h["detector.original.size"] == b"16384"
    assert h["detector.original.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert h["detector.source.partition"] == b"3" and h["detector.source.offset"] == b"41"


def test_an_oversize_key_is_cut_too() -> None:
    key = b"k" * 10_000
    d = dead_letter(0, None, key, SOURCE, Reason.EMPTY, "no value", 4096)
    h = dict(d.out.headers or [])
    assert message_bytes(d.out.value, d.out.key, d.out.headers) <= 4096
    assert h["detector.truncated"] == b"key,value" and h["detector.original.key_size"] == b"10000"
    assert h["detector.original.key_sha256"] == hashlib.sha256(key).hexdigest().encode()
    assert key.startswith(d.out.key or b"") and h["detector.original.size"] == b"0"
