"""Can the broker be reached, and how long to wait before trying again.

A TCP connect to the bootstrap servers comes before any Kafka client is built: a closed
port or an unknown host is then one clear reason (``connection refused``, ``host not
found``) in one line of our own, instead of kafka-python's retries inside the
``bootstrap_timeout_ms`` and its ``KafkaTimeoutError: Unable to bootstrap``.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

from detector.errors import BrokerUnavailableError, ConfigError

log = logging.getLogger(__name__)

# Kafka clients reconnect by themselves, silently here (their lines are filtered), so a
# broker lost mid-session is noticed by our own TCP check, made after this long without
# records; a connect every few seconds of idleness costs the broker nothing.
BROKER_CHECK_IDLE_S = 5.0
# The in-session check blocks the (idle) loop: a short timeout keeps a black-holed host
# from stalling heartbeats and reloads.
BROKER_CHECK_TIMEOUT_S = 1.0
# Back-off between failed checks: 0.5 s doubling up to 30 s, as between sessions.
CHECK_BACKOFF_START_S = 0.5
CHECK_BACKOFF_MAX_S = 30.0

BOOTSTRAP_SETTING = "kafka.bootstrap_servers"
BOOTSTRAP_ENV = "DETECTOR_KAFKA__BOOTSTRAP_SERVERS"
MISSING_BOOTSTRAP = (
    f"{BOOTSTRAP_SETTING} is not set: pass --bootstrap HOST:PORT, set {BOOTSTRAP_ENV}, "
    'or put bootstrap_servers = "HOST:PORT" under [kafka] in the --config TOML file'
)


def parse_bootstrap(servers: str | None) -> list[tuple[str, int]]:
    """``host:port[,host:port]`` -> [(host, port)]; ``ConfigError`` naming the setting."""
    if not servers or not servers.strip():
        raise ConfigError(MISSING_BOOTSTRAP)
    out = []
    for item in (s.strip() for s in servers.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")  # [::1]:9092
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
            raise ConfigError(
                f"{BOOTSTRAP_SETTING} = {servers!r}: {item!r} is not HOST:PORT "
                f"(e.g. 127.0.0.1:9092; several separated by commas; env {BOOTSTRAP_ENV})"
            )
        out.append((host, int(port)))
    if not out:
        raise ConfigError(MISSING_BOOTSTRAP)
    return out


def _why(exc: OSError, timeout_s: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    return exc.strerror or type(exc).__name__


def check_reachable(servers: str | None, timeout_s: float) -> None:
    """Return once one bootstrap server accepts a TCP connection; else ``BrokerUnavailableError``.

    The message reads ``broker HOST:PORT unreachable (REASON)``.
    """
    failures: list[tuple[str, str]] = []
    for host, port in parse_bootstrap(servers):
        name = f"{host}:{port}"
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return
        except OSError as exc:
            failures.append((name, _why(exc, timeout_s)))
    names = ", ".join(n for n, _ in failures)
    reasons = {r for _, r in failures}
    why = reasons.pop() if len(reasons) == 1 else "; ".join(f"{n} {r}" for n, r in failures)
    raise BrokerUnavailableError(
        f"broker{'s' if len(failures) > 1 else ''} {names} unreachable ({why})"
    )


@dataclass
class Backoff:
    """Doubling waits between attempts: ``start_s``, 2x, 4x... capped at ``max_s``."""

    start_s: float = 0.5
    max_s: float = 30.0
    failures: int = 0  # failed attempts since the last success

    def next_delay_s(self) -> float:
        """Count one more failed attempt and return how long to wait before the next."""
        self.failures += 1
        return min(self.max_s, self.start_s * 2.0 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0


class BrokerWatch:
    """Reports a broker lost mid-session, one line per check with the back-off.

    The session goes on (the client reconnects by itself, and a failed send still ends
    the session); meanwhile /readyz says why it is not ready (``health``).
    """

    def __init__(self, servers: str | None, errors: Any, health: Any) -> None:
        self.servers = servers
        self.errors = errors  # a counter: inc() per failed check
        self.health = health  # .connected, .reason
        self.backoff = Backoff(CHECK_BACKOFF_START_S, CHECK_BACKOFF_MAX_S)
        self.next_check = 0.0

    def restart(self) -> None:
        """A new session: no failure seen, the first check after an idle spell."""
        self.backoff = Backoff(CHECK_BACKOFF_START_S, CHECK_BACKOFF_MAX_S)
        self.next_check = time.monotonic() + BROKER_CHECK_IDLE_S

    def __call__(self, got_records: bool) -> None:
        now = time.monotonic()
        if got_records and not self.backoff.failures:
            self.next_check = now + BROKER_CHECK_IDLE_S
            return
        if now < self.next_check:
            return
        try:
            check_reachable(self.servers, BROKER_CHECK_TIMEOUT_S)
        except BrokerUnavailableError as exc:
            self.errors.inc()
            self.health.connected = False
            self.health.reason = str(exc)
            delay_s = self.backoff.next_delay_s()
            log.warning(
                "%s; the client reconnects, check %d in %.1f s", exc, self.backoff.failures, delay_s
            )
            self.next_check = now + delay_s
            return
        if self.backoff.failures:
            log.info("broker %s reachable again", self.servers)
            self.health.connected = True
            self.health.reason = "connected"
            self.backoff.reset()
        self.next_check = now + BROKER_CHECK_IDLE_S
