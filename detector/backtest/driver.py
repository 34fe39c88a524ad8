"""One backtest from a stream: split off the training part (or take a model), replay the rest.

The versions the run makes live in a registry of its own (a temporary directory unless
``registry_dir`` is given); a model taken from the user's registry is copied into it with
its version id, so the alerts name the version the live service would name.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.backtest.figures import summarize
from detector.backtest.run import Backtest, Plan, Progress, Replay
from detector.backtest.source import Stream
from detector.errors import DataError
from detector.model.bundle import ModelBundle
from detector.registry.store import ModelRegistry
from detector.retrain.pace import Pace, pace
from detector.settings import Settings

# Without --model, --train-rows or --train-until: the first 30% of the rows train.
DEFAULT_TRAIN_FRACTION = 0.3


@dataclass
class Split:
    """Where training stops: the first ``rows``, or rows before ``until_ms``, or a ``fraction``."""

    rows: int | None = None
    until_ms: float | None = None
    fraction: float | None = None

    def index(self, stream: Stream) -> int:
        n = len(stream)
        if self.rows is not None:
            if not 0 < self.rows < n:
                raise DataError(
                    f"--train-rows {self.rows}: the file has {n} rows; train on fewer so that "
                    "some are left to stream"
                )
            return self.rows
        if self.until_ms is not None:
            k = int(np.searchsorted(stream.times_ms, self.until_ms, side="left"))
            if not 0 < k < n:
                where = "before the first event" if k == 0 else "after the last event"
                raise DataError(
                    f"--train-until is {where} ({_iso(stream.times_ms[0])} .. "
                    f"{_iso(stream.times_ms[-1])}): nothing would be "
                    + ("trained on" if k == 0 else "streamed")
                )
            return k
        fraction = self.fraction if self.fraction is not None else DEFAULT_TRAIN_FRACTION
        k = round(n * fraction)
        if not 0 < k < n:
            raise DataError(f"--train-fraction {fraction}: leaves no rows to train on or stream")
        return k


def _iso(ms: Any) -> str:
    from detector.events import format_time_ms

    return format_time_ms(float(ms))


@dataclass
class Result:
    summary: dict[str, Any]
    replay: Replay
    streamed: Stream
    first_model: ModelBundle


@contextmanager
def run_registry(settings: Settings, directory: Path | None) -> Iterator[ModelRegistry]:
    """The run's own registry, with the user's signing key; a temporary one is removed after."""
    if directory is not None:
        yield ModelRegistry(settings.registry.model_copy(update={"path": directory}))
        return
    with tempfile.TemporaryDirectory(prefix="detector-backtest-") as tmp:
        yield ModelRegistry(settings.registry.model_copy(update={"path": Path(tmp)}))


def train_first(settings: Settings, part: Stream) -> ModelBundle:
    """The first model, from the training part, as ``detector train`` would fit it."""
    from detector.model.choose import train_table

    return train_table(
        part.rows,
        part.entities,
        part.times_ms.tolist(),
        settings,
        labels=part.labels,
        column_notes=part.notes,
    )


def stream_pace(stream: Stream, settings: Settings) -> Pace:
    """The retraining pace of a recording: its event rate over its own span."""
    span_s = float(stream.times_ms[-1] - stream.times_ms[0]) / 1000.0
    return pace(len(stream) / span_s if span_s > 0 else 0.0, settings, span_s)


def copy_version(source: ModelRegistry, version: str | None, target: ModelRegistry) -> str:
    """Copy a verified version (CURRENT when None) into ``target`` under the same id; CURRENT."""
    bundle = source.load(version)  # verifies checksum and signature first
    assert bundle.version is not None
    target.versions_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source.versions_dir / bundle.version, target.versions_dir / bundle.version)
    target.promote(bundle.version, force=True)
    return bundle.version


def run_backtest(
    stream: Stream,
    settings: Settings,
    plan: Plan,
    *,
    windows: int = 10,
    window_by: str = "auto",
    split: Split | None = None,
    model: tuple[ModelRegistry, str | None] | ModelBundle | None = None,
    registry_dir: Path | None = None,
    progress: Progress | None = None,
) -> Result:
    """Train on the first part (or take ``model``: a registry and version, or a bundle), replay the rest.

    With a model and no ``split`` the whole stream is replayed.
    """
    if windows < 1:
        raise DataError(f"--windows {windows}: at least 1")
    with run_registry(settings, registry_dir) as registry:
        if isinstance(model, ModelBundle):
            streamed = stream if split is None else stream.part(split.index(stream), len(stream))
            registry.publish(model)
            trained_rows = 0
        elif model is not None:
            source, version = model
            streamed = stream if split is None else stream.part(split.index(stream), len(stream))
            copy_version(source, version, registry)
            trained_rows = 0
        else:
            k = (split or Split()).index(stream)
            registry.publish(train_first(settings, stream.part(0, k)))
            streamed = stream.part(k, len(stream))
            trained_rows = k
        first = registry.load()
        replay = Backtest(settings, registry, plan, progress).run(streamed)
    summary = summarize(streamed, replay, windows, window_by)
    summary["stream"]["trained_on_rows"] = trained_rows
    summary["first_model"] = {
        "version": first.version,
        "chosen": first.summary.get("chosen"),
        "thresholds": first.thresholds.to_dict(),
    }
    summary["plan"] = {
        "batch_rows": plan.batch_rows,
        "topic": plan.topic,
        "retrain_every_s": plan.retrain_every_s,
        "retrain_on_drift": plan.retrain_on_drift,
        "windows": windows,
        "reload_interval_s": settings.service.reload_interval_s,
        "sample_rate": settings.drift.sample_rate,
        "retrain_min_samples": settings.retrain.min_samples,
        "alert_cooldown_s": settings.service.alert_cooldown_s,
    }
    summary["pace"] = stream_pace(streamed, settings).to_dict()
    return Result(summary, replay, streamed, first)
