"""Training time of the default grid (K 1..10 x 4 covariance types) on 100,000 rows x 8 features.

    python -m bench.train_time [--rows 100000]

Prints the wall time of each phase and writes bench/results/train-time-latest.md.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.throughput import FEATURE_NAMES, sample
from detector.model.train import train
from detector.settings import load_settings

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    x, _ = sample(args.rows, seed=5)
    rows = [dict(zip(FEATURE_NAMES, r, strict=True)) for r in x.tolist()]
    settings = load_settings(environ={})
    started = time.perf_counter()
    bundle = train(rows, settings)
    total = time.perf_counter() - started
    s = bundle.summary
    fitted = [c for c in s["grid"] if c["bic"] is not None]
    line = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, nproc={os.cpu_count()}: {args.rows:,} rows x {len(FEATURE_NAMES)} features, "
        f"default grid ({len(s['grid'])} cells, {len(fitted)} fitted on a {s['rows']['bic_subsample']:,}-row subsample, "
        f"n_jobs={settings.training.n_jobs}): total {total:.1f} s (grid {s['grid_seconds']:.1f} s, "
        f"refit + calibration {total - s['grid_seconds']:.1f} s); chose K={s['chosen']['n_components']} {s['chosen']['covariance_type']}"
    )
    print(line)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train-time-latest.md").write_text(f"# Training time\n\n{line}\n")


if __name__ == "__main__":
    main()
