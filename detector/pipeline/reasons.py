"""The stable reason codes of dead letters (header ``detector.reason``, metric label)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a record became a dead letter. Values are a public contract: never renamed."""

    EMPTY = "empty"  # the record has no value
    TOO_LARGE = "too_large"  # over event.max_record_bytes
    INVALID_JSON = "invalid_json"  # not JSON (or invalid UTF-8, or nested over 1024 levels)
    NOT_AN_OBJECT = "not_an_object"  # JSON, but not an object (or its values are not one)
    MISSING_FEATURES = "missing_features"  # too many features absent for the missing policy
    BAD_VALUE = "bad_value"  # a value that cannot be used: a string feature, an infinity,
    # a reading that overflows once standardized, an object as entity, a time out of range
    ALERT_TOO_LARGE = "alert_too_large"  # it alerted, but the alert is over the producer's limit
    INTERNAL_ERROR = "internal_error"  # an unexpected exception handling this record (a bug):
    # confined to the record; the message names the exception

    @classmethod
    def of(cls, code: str) -> Reason:
        """The member for a code some stage produced; unknown codes are internal errors."""
        try:
            return cls(code)
        except ValueError:
            return cls.INTERNAL_ERROR
