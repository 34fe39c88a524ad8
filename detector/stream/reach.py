"""Can the broker be reached, and how long to wait before trying again.

A TCP connect to the bootstrap servers comes before any Kafka client is built: a closed
port or an unknown host is then one clear reason (``connection refused``, ``host not
found``) in one line of our own, instead of kafka-python's retries inside the
``bootstrap_timeout_ms`` and its ``KafkaTimeoutError: Unable to bootstrap``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from detector.errors import BrokerUnavailableError, ConfigError

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
