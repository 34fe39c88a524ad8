"""Every Kafka codec decodes: the libraries kafka-python looks for are installed."""

from __future__ import annotations

import pytest
from kafka import codec


@pytest.mark.parametrize(
    ("name", "available", "encode", "decode"),
    [
        ("gzip", codec.has_gzip, codec.gzip_encode, codec.gzip_decode),
        ("snappy", codec.has_snappy, codec.snappy_encode, codec.snappy_decode),
        ("lz4", codec.has_lz4, codec.lz4_encode, codec.lz4_decode),
        ("zstd", codec.has_zstd, codec.zstd_encode, codec.zstd_decode),
    ],
)
def test_each_codec_round_trips_a_batch(name: str, available, encode, decode) -> None:
    # Given a batch-sized payload of events
    payload = b'{"entity": "pump-01", "values": {"temp": 60.1}}' * 2_000
    # Then kafka-python finds the codec's library, and it round-trips
    assert available(), f"kafka-python cannot decode {name}: its library is not installed"
    assert decode(encode(payload)) == payload
