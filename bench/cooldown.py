"""Per-batch pipeline throughput with 1,000,000 distinct alerting entities, cooldown on vs off.

    python -m bench.cooldown [--entities 1000000] [--batch 1000] [--cooldown-s 3600]

Every event is an anomaly of its own entity, so with the cooldown on each one is a new
entry in the cooldown map: past its bound (100,000 entities) every alert evicts one. The
old map scanned itself on every alert past the bound (1.9 us -> 5,700 us a call, issue 16);
the LRU evicts in O(1). Batches are handed to both pipelines in turn (the one without
cooldown sees every ``--off-every``-th batch, to keep the run under ~3 minutes: it has no
state that grows), so load from other processes slows both alike and the ratio is
measured in one run.
Kafka is not involved: this is ``detector.pipeline.process``, what the service runs per poll.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from detector.events import EventParser
from detector.model.scorer import Scorer
from detector.model.train import train
from detector.pipeline import PipelineState, RecordSlice, process
from detector.settings import load_settings
from detector.stream.alerts import Cooldown

FEATURES = ("temp", "vibration", "pressure", "flow")
MEANS = np.array([60.0, 0.3, 4.0, 120.0])
STDS = np.array([2.0, 0.05, 0.3, 5.0])
# The service's cooldown bound (DetectorService builds Cooldown with its default).
COOLDOWN_MAX_ENTITIES = 100_000


def model() -> Scorer:
    rng = np.random.default_rng(0)
    x = MEANS + rng.normal(size=(20_000, 4)) * STDS
    settings = load_settings(
        overrides={"model": {"n_components_max": 2}, "training": {"n_jobs": 1}}, environ={}
    )
    return Scorer(train([dict(zip(FEATURES, r, strict=True)) for r in x.tolist()], settings))


def batch(start: int, n: int, base_ms: int, rng: np.random.Generator) -> RecordSlice:
    x = MEANS + rng.normal(size=(n, 4)) * STDS
    x[:, 1] += 12 * STDS[1]  # every event an anomaly
    values: list[bytes | None] = [
        orjson.dumps(
            {
                "entity": f"pump-{start + i:07d}",
                "ts": base_ms + start + i,
                "values": dict(zip(FEATURES, row, strict=True)),
            }
        )
        for i, row in enumerate(x.tolist())
    ]
    offsets = list(range(start, start + n))
    return RecordSlice(["events"] * n, [0] * n, offsets, [base_ms] * n, [None] * n, values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--cooldown-s", type=float, default=3600.0)
    ap.add_argument(
        "--off-every", type=int, default=4, help="batches per batch timed without cooldown"
    )
    args = ap.parse_args()

    scorer = model()
    settings = load_settings(environ={})
    off = PipelineState(EventParser(settings.event), Cooldown(0))
    on = PipelineState(
        EventParser(settings.event), Cooldown(args.cooldown_s, max_entities=COOLDOWN_MAX_ENTITIES)
    )
    rng = np.random.default_rng(1)
    base_ms = int(time.time() * 1000) - 3_600_000
    took = {"off": 0.0, "on": 0.0}
    events = {"off": 0, "on": 0}
    alerts = {"off": 0, "on": 0}
    batch_ms: dict[str, list[float]] = {"off": [], "on": []}
    with threadpool_limits(limits=1):  # as the service runs
        # First calls pay one-off costs (imports, caches): on throwaway state, untimed.
        warm = PipelineState(EventParser(settings.event), Cooldown(args.cooldown_s))
        process(batch(-args.batch, args.batch, base_ms, rng), scorer, warm, now_ms=base_ms)
        for k, start in enumerate(range(0, args.entities, args.batch)):
            records = batch(start, min(args.batch, args.entities - start), base_ms, rng)
            for name, state in (("off", off), ("on", on)):
                if name == "off" and k % args.off_every:
                    continue
                t0 = time.perf_counter()
                outcome = process(records, scorer, state, now_ms=base_ms)
                dt = time.perf_counter() - t0
                took[name] += dt
                events[name] += len(records)
                alerts[name] += len(outcome.alerts)
                batch_ms[name].append(dt * 1000.0)

    n = args.entities
    rate = {k: events[k] / v for k, v in took.items()}
    cd = on.cooldown
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, nproc={os.cpu_count()}: {n:,} events of "
        f"{n:,} distinct entities, every one alerting, batches of {args.batch:,}"
    )
    p = {k: np.percentile(v, [50, 99]) for k, v in batch_ms.items()}
    print(
        f"without cooldown: {rate['off']:,.0f} events/s ({events['off']:,} events timed, "
        f"{alerts['off']:,} alerts), batch p50 {p['off'][0]:.0f} ms p99 {p['off'][1]:.0f} ms"
    )
    print(
        f"with cooldown {args.cooldown_s:g} s (bound {cd.max_entities:,}): {rate['on']:,.0f} "
        f"events/s ({alerts['on']:,} alerts), map {len(cd):,} entities, {cd.evictions:,} "
        f"evicted, batch p50 {p['on'][0]:.0f} ms p99 {p['on'][1]:.0f} ms"
    )
    ratio = rate["off"] / rate["on"]
    print(
        f"ratio without/with cooldown: {ratio:.2f}x (target <= 2x: {'met' if ratio <= 2 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
