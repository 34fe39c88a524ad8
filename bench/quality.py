"""Detection quality on real labelled data, against other detectors on the same split.

    python -m bench.quality [--data ../shared/data] [--out bench/results]

For every folder with ``train.csv`` and ``test.csv``: train on train.csv (normal rows),
score test.csv, and report AUROC, AUPRC, the alert rate on normal test rows against the
1% target, recall at the warning and critical thresholds, fit time and scoring rows/s.

Baselines get the same features (the project's encoder: one-hot, log1p where configured,
train-mean imputation, standard scaling) and the same threshold protocol (percentiles of
scores on a held-out 20% of the training rows): scikit-learn ``IsolationForest``
(random_state 0), a single full-covariance Gaussian, and River's streaming
``HalfSpaceTrees``. Settings are chosen on training data only; test labels are used for
the figures and nothing else.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from detector.features.encoder import FeatureEncoder
from detector.io.tables import read_table
from detector.model.evaluate import quality
from detector.model.scorer import Scorer
from detector.model.train import train
from detector.settings import Settings, load_settings

RESULTS = Path(__file__).parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WARNING, CRITICAL = 1.0, 0.1  # target alert rates (%) on normal rows


def figures(
    name: str, score: np.ndarray, y: np.ndarray, cal_score: np.ndarray, fit_s: float, score_s: float
) -> dict[str, Any]:
    """``score``: higher = more anomalous. Thresholds: percentiles of held-out normal scores."""
    ok = np.isfinite(score)
    s, yy = score[ok], y[ok]
    warn = np.percentile(cal_score, 100 - WARNING)
    crit = np.percentile(cal_score, 100 - CRITICAL)
    return {
        "detector": name,
        "auroc": float(roc_auc_score(yy, s)),
        "auprc": float(average_precision_score(yy, s)),
        "alert_rate_normal_warning": float((s[~yy] > warn).mean()),
        "recall_warning": float((s[yy] > warn).mean()),
        "recall_critical": float((s[yy] > crit).mean()),
        "alert_rate_normal_critical": float((s[~yy] > crit).mean()),
        "fit_s": fit_s,
        "score_rows_per_s": len(score) / max(score_s, 1e-9),
    }


def run_dataset(folder: Path, settings: Settings, with_backtest: bool = True) -> dict[str, Any]:
    tr = read_table(folder / "train.csv", settings, "label")
    te = read_table(folder / "test.csv", settings, "label")
    assert te.labels is not None
    y = te.labels.astype(bool)
    results = []

    t0 = time.perf_counter()
    bundle = train(tr.rows, settings, labels=tr.labels)
    fit_s = time.perf_counter() - t0
    scorer = Scorer(bundle, settings.features, settings.thresholds)
    t0 = time.perf_counter()
    res = scorer.score(te.rows)
    score_s = time.perf_counter() - t0
    # The project's own thresholds, exactly as the service applies them, and the figures
    # `detector evaluate` reports.
    q = quality(res, te.labels)
    warning, critical = (
        q["per_severity"][n] for n in (res.severity_names[0], res.severity_names[-1])
    )
    proj: dict[str, Any] = {
        "detector": "detector (GMM, BIC)",
        "auroc": q["auroc"],
        "auprc": q["auprc"],
        "alert_rate_normal_warning": warning["alert_rate_normal"],
        "recall_warning": warning["recall_anomalous"],
        "recall_critical": critical["recall_anomalous"],
        "alert_rate_normal_critical": critical["alert_rate_normal"],
        "fit_s": fit_s,
        "score_rows_per_s": len(te.rows) / max(score_s, 1e-9),
    }
    proj["model"] = (
        f"K={bundle.summary['chosen']['n_components']} {bundle.summary['chosen']['covariance_type']}"
    )
    results.append(proj)

    # The same features for everyone: the project's encoder, train-mean imputation, scaling.
    enc = FeatureEncoder(bundle.spec, settings.features)
    normal = [
        r
        for r, lab in zip(
            tr.rows, tr.labels if tr.labels is not None else np.zeros(len(tr.rows)), strict=True
        )
        if lab == 0
    ]
    xtr = enc.encode(normal).matrix
    xte = enc.encode(te.rows).matrix
    mean = np.nanmean(xtr, axis=0)
    xtr = np.where(np.isnan(xtr), mean, xtr)
    xte = np.where(np.isnan(xte), mean, xte)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(xtr))
    n_cal = len(xtr) // 5
    cal, fit = xtr[order[:n_cal]], xtr[order[n_cal:]]
    scaler = StandardScaler().fit(fit)
    fit_s_, cal_s_, te_s_ = (
        scaler.transform(fit),
        scaler.transform(cal),
        scaler.transform(np.clip(xte, -1e12, 1e12)),
    )

    t0 = time.perf_counter()
    iso = IsolationForest(random_state=0).fit(fit_s_)
    f = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = -iso.score_samples(te_s_)
    results.append(
        figures("IsolationForest", s, y, -iso.score_samples(cal_s_), f, time.perf_counter() - t0)
    )

    t0 = time.perf_counter()
    g = GaussianMixture(1, covariance_type="full", reg_covar=1e-6, random_state=0).fit(fit_s_)
    f = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = -g.score_samples(te_s_)
    results.append(
        figures(
            "single Gaussian (full)", s, y, -g.score_samples(cal_s_), f, time.perf_counter() - t0
        )
    )

    try:
        from river import anomaly, preprocessing
    except ImportError:
        results.append(
            {
                "detector": "River HalfSpaceTrees",
                "skipped": "river not installed (pip install 'detector[bench]')",
            }
        )
    else:
        names = [f"f{j}" for j in range(fit.shape[1])]
        model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            seed=0, n_trees=25, height=12, window_size=250
        )
        t0 = time.perf_counter()
        for row in fit:
            model.learn_one(dict(zip(names, row.tolist(), strict=True)))
        f = time.perf_counter() - t0
        cal_scores = np.array(
            [model.score_one(dict(zip(names, r.tolist(), strict=True))) for r in cal]
        )
        t0 = time.perf_counter()
        s = np.array(
            [
                model.score_one(dict(zip(names, r.tolist(), strict=True)))
                for r in np.clip(xte, -1e12, 1e12)
            ]
        )
        results.append(
            figures("River HalfSpaceTrees", s, y, cal_scores, f, time.perf_counter() - t0)
        )
    backtest = None
    if with_backtest:
        from bench.backtest_quality import run_shared

        backtest = run_shared(folder, settings, bundle)
    return {
        "backtest": backtest,
        "dataset": folder.name,
        "train_rows": len(tr.rows),
        "test_rows": len(te.rows),
        "test_anomaly_rate": float(y.mean()),
        "features": f"{len(bundle.spec.numeric)} numeric, {len(bundle.spec.categorical)} categorical",
        "results": results,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Detection quality, {report['date']}", "", report["protocol"], ""]
    for ds in report["datasets"]:
        lines += [
            f"## {ds['dataset']}: {ds['train_rows']:,} train rows, {ds['test_rows']:,} test rows ({100 * ds['test_anomaly_rate']:.1f}% anomalous), {ds['features']}",
            "",
            "| detector | AUROC | AUPRC | alert rate on normal (target 1%) | recall @ warning | recall @ critical (0.1%) | fit s | scoring rows/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ds["results"]:
            if "skipped" in r:
                lines.append(f"| {r['detector']} | skipped: {r['skipped']} |||||||")
                continue
            name = r["detector"] + (f" ({r['model']})" if "model" in r else "")
            lines.append(
                f"| {name} | {r['auroc']:.4f} | {r['auprc']:.4f} | {100 * r['alert_rate_normal_warning']:.2f}% | "
                f"{100 * r['recall_warning']:.1f}% | {100 * r['recall_critical']:.1f}% | {r['fit_s']:.1f} | {r['score_rows_per_s']:,.0f} |"
            )
        lines.append("")
    backtests = [b for ds in report["datasets"] for b in ds.get("backtest") or []]
    backtests += report.get("synthetic_backtest") or []
    if backtests:
        from bench.backtest_quality import markdown as backtest_markdown

        lines += backtest_markdown(backtests)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--config", type=Path, help="detector settings (TOML) for the project's model")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--no-backtest", action="store_true", help="only the frozen evaluation and the baselines"
    )
    args = ap.parse_args()
    if not args.data.is_dir():
        print(
            f"no data directory at {args.data}: nothing to evaluate (pass --data DIR with <name>/train.csv and test.csv)"
        )
        return
    folders = sorted(
        p for p in args.data.iterdir() if (p / "train.csv").exists() and (p / "test.csv").exists()
    )
    if not folders:
        print(f"no <name>/train.csv + test.csv folders under {args.data}: nothing to evaluate")
        return
    settings = load_settings(args.config)
    datasets = []
    for folder in folders:
        print(f"{folder.name} ...", flush=True)
        datasets.append(run_dataset(folder, settings, not args.no_backtest))
    synthetic = None
    if not args.no_backtest:
        from bench.backtest_quality import run_synthetic

        print("synthetic fleet (backtest) ...", flush=True)
        synthetic = run_synthetic(settings)
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "protocol": (
            "Train on train.csv (normal rows), score test.csv. Every detector sees the same encoded, "
            "train-mean-imputed, standardized features; thresholds are percentiles of scores on a held-out 20% "
            "of the training rows (the project: its own calibrated thresholds). Settings chosen on training data only."
        ),
        "settings": {
            "model": settings.model.model_dump(),
            "features": settings.features.model_dump(),
        },
        "datasets": datasets,
        "synthetic_backtest": synthetic,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (args.out / f"quality-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
    md = markdown(report)
    (args.out / f"quality-{stamp}.md").write_text(md)
    (args.out / "quality-latest.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
