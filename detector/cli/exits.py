"""Exit codes of every ``detector`` command, in one place (the README repeats this table).

| code | name        | when                                                                |
|------|-------------|---------------------------------------------------------------------|
| 0    | OK          | done; for ``retrain`` any expected outcome: promoted, rejected, refused, busy |
| 1    | FAILED      | the command ran and failed: no CURRENT model, a model refused by its integrity check, training failed, ``retrain`` outcome ``failed`` (not the broker) |
| 2    | USAGE       | bad command line, configuration (``config check``), or input/output file; nothing was started |
| 3    | BROKER      | the Kafka broker cannot be reached or answers with an error (``retrain`` outcome ``failed`` because of the broker, ``demo --bootstrap`` unreachable) |
| 130  | INTERRUPTED | Ctrl-C                                                              |

2 for usage is also what the command-line parser (click) uses for a bad option.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    BROKER = 3
    INTERRUPTED = 130


def is_broker_error(exc: BaseException) -> bool:
    """A BrokerUnavailableError, or any error raised by kafka-python (``kafka.errors``).

    Told by module name so that ``detector train`` never imports the Kafka client.
    """
    from detector.errors import BrokerUnavailableError

    if isinstance(exc, BrokerUnavailableError):
        return True
    return any(
        c.__module__ == "kafka" or c.__module__.startswith("kafka.") for c in type(exc).__mro__
    )
