"""``[event]``: where things sit inside an input event."""

from __future__ import annotations

from pydantic import Field

from detector.settings.base import Section


class EventSettings(Section):
    """Where things sit inside an input event."""

    values_key: str | None = Field(
        "values",
        description="Key of the object holding feature values; empty or unset = flat events with features at the top level.",
    )
    entity_key: str = Field(
        "entity", min_length=1, description="Key of the entity id (pump, host...)."
    )
    time_key: str = Field(
        "ts",
        min_length=1,
        description="Key of the event time (ISO 8601 or epoch ms); the Kafka timestamp is used when absent.",
    )
    max_record_bytes: int = Field(
        1_000_000, ge=64, description="Records larger than this are dead-lettered as too_large."
    )
