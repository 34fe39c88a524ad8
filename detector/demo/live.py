"""The live view: what the demo prints while the stream runs.

Three kinds of line, all printed here and nowhere else (log records go to the run's log
file, see ``detector.demo.quiet``): the story's steps (shift, drift, retrain, reload) in
magenta, a status line a second, and alerts as the alerts topic delivers them, at most
``PRINT_PER_S`` a second (the rest counted). Scores are spoken of as log-likelihoods
against thresholds (higher = more normal; an event alerts when below), as everywhere.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition
from rich.console import Console
from rich.markup import escape

# Printed alert lines per second at most; the rest are counted ("+N more").
PRINT_PER_S = 4


@dataclass
class LiveView:
    console: Console
    t0: float = field(default_factory=time.monotonic)
    wall0: float = field(default_factory=time.time)
    steps: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _second: int = 0
    _printed: int = 0
    _held: int = 0

    def restart(self) -> None:
        """Time zero of the timeline: the stream starts now."""
        self.t0, self.wall0 = time.monotonic(), time.time()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, kind: str, what: str) -> None:
        """A step of the story: ``kind`` is shift, drift, retrain or reload."""
        t = self.elapsed_s()
        with self._lock:
            self.steps.append({"t_s": t, "kind": kind, "what": what})
        self.console.print(f"[bold magenta]{t:6.1f}s  {escape(what)}[/]", soft_wrap=True)

    def status(
        self, sent: int, total: int, scored: int, alerts: int, dead: int, model: str
    ) -> None:
        self.console.print(
            f"[dim]{self.elapsed_s():5.0f}s  sent {sent:,}/{total:,}  scored {scored:,}  "
            f"alerts {alerts:,}  dead letters {dead}  model ...{model[-6:]}[/]",
            soft_wrap=True,
        )

    def alert(self, alert: dict[str, Any]) -> None:
        s = int(self.elapsed_s())
        with self._lock:
            if s != self._second:
                if self._held:
                    self.console.print(
                        f"[dim]         (+{self._held} more alerts in that second)[/]"
                    )
                self._second, self._printed, self._held = s, 0, 0
            if self._printed >= PRINT_PER_S:
                self._held += 1
                return
            self._printed += 1
        self.console.print(alert_line(alert), soft_wrap=True)


def alert_line(alert: dict[str, Any]) -> str:
    """``warning pump-03 10:00:07 log-likelihood -31.70 < warning threshold -14.20 <- ...``.

    The event time without its date (the demo's story spans an hour), the two features
    that drove the alert most, with their values.
    """
    sev = alert["severity"]
    top = ", ".join(f"{f['feature']}={_value(f['value'])}" for f in alert["top_features"][:2])
    clock = str(alert.get("event_time") or "")[11:19]
    color = "red" if sev == "critical" else "yellow"
    return (
        f"[{color}]{sev:>8}[/] {escape(str(alert['entity']))} {clock} "
        f"log-likelihood {alert['log_likelihood']:.2f} < {sev} threshold "
        f"{alert['threshold']:.2f} <- {escape(top)}"
    )


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, int | float) and not isinstance(v, bool) else str(v)


def read_alerts(
    bootstrap: str,
    topic: str,
    out: list[tuple[float, dict[str, Any]]],
    stop: threading.Event,
    view: LiveView,
) -> None:
    """Follow the alerts topic from its start until ``stop`` and a second of silence."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=20, enable_auto_commit=False
    )
    try:
        parts = None
        while not parts and not stop.is_set():
            parts = consumer.partitions_for_topic(topic)
            time.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        idle_since: float | None = None
        while True:
            polled = consumer.poll(timeout_ms=100)
            now = time.time()
            got = [r for rs in polled.values() for r in rs]
            if stop.is_set():
                if got:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > 1.0:
                    break
            for rec in got:
                alert = orjson.loads(rec.value)
                out.append((now, alert))
                view.alert(alert)
    finally:
        consumer.close()
