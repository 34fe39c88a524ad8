"""The corpus of nasty records (``tests/data/nasty_records.json``): bytes and expectations."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "nasty_records.json"
_PLACEHOLDER = re.compile(rb"@@(DEEP|REPEAT|HEX|WIDE):([^@]*)@@")
# What the pipeline may make of a record: a score, an alert, or a dead letter's reason.
SCORED, ALERT = "scored", "alert"


@dataclass(frozen=True)
class NastyRecord:
    name: str
    value: bytes | None
    key: bytes | None
    expect: str  # scored, alert, or a dead-letter reason code


def _expand(text: str | None) -> bytes | None:
    if text is None:
        return None

    def sub(m: re.Match[bytes]) -> bytes:
        kind, arg = m.group(1), m.group(2).decode()
        if kind == b"DEEP":
            n = int(arg)
            return b"[" * n + b"1" + b"]" * n
        if kind == b"REPEAT":
            char, n = arg.split(":")
            return char.encode() * int(n)
        if kind == b"HEX":
            return bytes.fromhex(arg)
        return ", ".join(f'"k{i}": {i}' for i in range(int(arg))).encode()

    return _PLACEHOLDER.sub(sub, text.encode("utf-8"))


def load_corpus() -> list[NastyRecord]:
    cases = json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]
    return [
        NastyRecord(c["name"], _expand(c["value"]), _expand(c.get("key")), c["expect"])
        for c in cases
    ]
