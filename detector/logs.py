"""Log set-up for every command: text for people, JSON lines for log pipelines.

What a person reads is our own code's lines. Third-party libraries (kafka-python) are
heard only at WARNING and above, and never about connection failures: kafka-python logs
four lines per failed attempt at ERROR/WARNING, each with the exception class twice, while
the service and the retrainer report each attempt themselves, in one line with the
back-off (``broker 127.0.0.1:9 unreachable (connection refused); retry 3 in 4.0 s``).
The last connection message dropped is kept (``last_connection_failure``) so that line
can say what the library saw. ``service.log_level = "DEBUG"`` lets every third-party line
through, for debugging the client itself.
"""

from __future__ import annotations

import logging
import re
import sys
from collections import deque
from datetime import UTC, datetime

import orjson

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

# Libraries whose loggers are filtered: every record whose logger name starts with one.
THIRD_PARTY_LOGGERS = ("kafka", "librdkafka")
# kafka-python's messages about reaching a broker (kafka/net/*.py, kafka/cluster.py), and
# librdkafka's, each one failed attempt; authentication and topic errors are not among
# them and pass.
_CONNECTION_TEXT = re.compile(
    r"connection failed|connection lost|bootstrap|not ready|econnrefused|socket disconnected"
    r"|error (receiving|sending) (network|request) data|: abort \(|request timed out"
    r"|metadata refresh|no node available"
    # librdkafka's (detector.stream.transport.confluent)
    r"|connect to .* failed|broker connections are down|disconnected \(after",
    re.IGNORECASE,
)


# kafka-python warnings that tell a user nothing they can act on: a consumer without a
# group (the retrainer's window reader, the demo's alert reader) has no auto-commit; a
# step of its IO loop took over 0.1 s (kafka/net/selector.py's self-check, which any busy
# machine trips; a loop that really wedges is ended by the fetch process's watchdog).
_HARMLESS_TEXT = re.compile(
    r"group_id is None: disabling auto-commit|It is blocking the event loop"
    # librdkafka's idempotent producer while a fresh broker loads its coordinators
    r"|Coordinator load in progress: retrying"
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def is_third_party(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in THIRD_PARTY_LOGGERS)


class ThirdPartyFilter(logging.Filter):
    """Lets a third-party record through only at WARNING+ and when not about connecting."""

    def __init__(self) -> None:
        super().__init__()
        self.last_connection_failure: str | None = None
        self.dropped_connection_records = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_third_party(record.name):
            return True
        if record.levelno < logging.WARNING:
            return False
        message = record.getMessage()
        if _HARMLESS_TEXT.search(message):
            return False
        if _CONNECTION_TEXT.search(message):
            self.last_connection_failure = message
            self.dropped_connection_records += 1
            return False
        return True


_FILTER = ThirdPartyFilter()


def setup_logging(fmt: str = "text", level: str = "INFO") -> None:
    """One stderr handler on the root logger; third-party lines filtered (see module doc)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    debug = logging.getLevelName(level) == logging.DEBUG
    if not debug:
        handler.addFilter(_FILTER)  # a handler filter sees the records of every child logger
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in THIRD_PARTY_LOGGERS:
        # Below WARNING the records are not even built (kafka-python logs a lot at DEBUG).
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def last_connection_failure() -> str | None:
    """The last third-party connection message the filter dropped (None if none yet)."""
    return _FILTER.last_connection_failure


def describe_error(exc: BaseException) -> str:
    """``Class: message`` with the class named once (kafka-python repeats it in str())."""
    name = type(exc).__name__
    text = str(exc).strip()
    while text.startswith(name):
        text = text[len(name) :].lstrip(":").strip()
    return f"{name}: {text}" if text else name


def session_end_reason(exc: BaseException, servers: str | None, connected: bool) -> str:
    """Why a Kafka session ended, for the retry line and /readyz: the class named once.

    ``connected``: the session's producer had reached the cluster; before that, the end is
    the broker being unreachable, with kafka-python's last line about it if it says more.
    """
    from detector.errors import BrokerUnavailableError

    if isinstance(exc, BrokerUnavailableError):
        return str(exc)  # "broker HOST:PORT unreachable (connection refused)"
    if not connected:
        seen = last_connection_failure()
        if seen and str(exc).rsplit(": ", 1)[-1] in seen:
            seen = None  # kafka-python's last line only repeated the exception
        return (
            f"broker {servers} unreachable "
            f"({describe_error(exc)}{f'; kafka-python: {seen}' if seen else ''})"
        )
    return f"Kafka session ended ({describe_error(exc)})"


class RecentRecords(logging.Handler):
    """Keeps the last ``maxlen`` records of a logger, formatted only when asked for.

    The records still reach the root handler, whose filter drops kafka-python's below
    WARNING: nothing more is printed until ``lines()`` is."""

    def __init__(self, maxlen: int) -> None:
        super().__init__(logging.DEBUG)
        self.records: deque[logging.LogRecord] = deque(maxlen=maxlen)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        # "need_rejoin: False ..." comes from every turn of the poll loop and would push
        # everything else out (a stalled join of 2026-12-07: all 200 lines in 64 ms).
        if (
            isinstance(record.msg, str)
            and record.msg.startswith("need_rejoin: ")
            and record.args
            and isinstance(record.args, tuple)
            and record.args[0] is False
        ):
            return
        self.records.append(record)  # deque appends are atomic: the IO thread logs too

    def lines(self) -> list[str]:
        out = []
        for record in list(self.records):
            try:
                out.append(self.format(record))
            except Exception as exc:  # a record whose arguments no longer format
                out.append(f"(unformattable record {record.msg!r}: {exc})")
        return out


def keep_recent_records(logger: str, maxlen: int) -> RecentRecords:
    """Keep ``logger``'s last ``maxlen`` records, DEBUG included, to print on demand."""
    recent = RecentRecords(maxlen)
    source = logging.getLogger(logger)
    source.setLevel(logging.DEBUG)
    source.addHandler(recent)
    return recent
