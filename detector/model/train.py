"""Training: normal rows -> scaler + mixture chosen by BIC + calibrated thresholds.

The steps, in order: encode rows with the feature spec; drop rows that are labelled
anomalous, invalid or incomplete; split into a fit part and a held-out calibration part;
fit the scaler on the fit part; search (n_components x covariance_type) by BIC on a seeded
subsample, in parallel; refit the winner on the whole fit part; calibrate severity
thresholds on the calibration part's log-likelihoods.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed, parallel_config
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from detector.errors import TrainingError
from detector.events import format_time_ms
from detector.features.encoder import FeatureEncoder
from detector.features.spec import FeatureSpec, describe_columns, infer_spec
from detector.model.bundle import ModelBundle, library_versions
from detector.model.thresholds import Thresholds
from detector.settings import ModelSettings, Settings

# Reported in the summary: fine enough to read the tail the thresholds live in.
CALIBRATION_QUANTILES = (0.01, 0.1, 0.5, 1, 2, 5, 10, 25, 50, 75, 90, 99)
# Ten quantile bins per feature is the usual resolution for population stability (PSI).
REFERENCE_BINS = 10

ProgressCallback = Callable[[int, int, str], None]


@dataclass
class GridCell:
    """One (n_components, covariance_type) fit of the BIC search."""

    n_components: int
    covariance_type: str
    n_parameters: int
    bic: float | None = None
    aic: float | None = None
    converged: bool = False
    n_iter: int = 0
    fit_s: float = 0.0
    skipped: str | None = None


def n_parameters(k: int, d: int, covariance_type: str) -> int:
    """Free parameters of a d-dimensional K-component mixture (as in sklearn's BIC)."""
    cov = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return cov + k * d + k - 1


def _make_gmm(k: int, covariance_type: str, cfg: ModelSettings) -> GaussianMixture:
    return GaussianMixture(
        n_components=k,
        covariance_type=covariance_type,
        reg_covar=cfg.reg_covar,
        max_iter=cfg.max_iter,
        tol=cfg.tol,
        n_init=cfg.n_init,
        random_state=cfg.random_seed,
    )


def _fit_cell(x: np.ndarray, cell: GridCell, cfg: ModelSettings) -> GridCell:
    if x.shape[0] < 2 * cell.n_parameters:
        cell.skipped = f"too few rows ({x.shape[0]}) for {cell.n_parameters} parameters"
        return cell
    start = time.perf_counter()
    gmm = _make_gmm(cell.n_components, cell.covariance_type, cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            gmm.fit(x)
        except (ValueError, np.linalg.LinAlgError) as exc:
            cell.skipped = f"fit failed: {exc}"
            cell.fit_s = time.perf_counter() - start
            return cell
    cell.fit_s = time.perf_counter() - start
    cell.converged = bool(gmm.converged_) and not any(
        issubclass(w.category, ConvergenceWarning) for w in caught
    )
    cell.n_iter = int(gmm.n_iter_)
    cell.bic = float(gmm.bic(x))
    cell.aic = float(gmm.aic(x))
    return cell


def search_grid(
    x: np.ndarray, cfg: ModelSettings, n_jobs: int, progress: ProgressCallback | None = None
) -> list[GridCell]:
    """Fit every grid cell on ``x`` and record BIC/AIC, or why it was skipped."""
    d = x.shape[1]
    cells = [
        GridCell(k, cov, n_parameters(k, d, cov))
        for cov in cfg.covariance_types
        for k in range(cfg.n_components_min, cfg.n_components_max + 1)
    ]
    # Big cells first so the two workers finish together.
    cells.sort(key=lambda c: -c.n_parameters)
    done: list[GridCell] = []
    # One BLAS thread per worker: two workers on two cores, no oversubscription.
    with parallel_config(backend="loky", inner_max_num_threads=1):
        results = Parallel(n_jobs=min(n_jobs, len(cells)), return_as="generator_unordered")(
            delayed(_fit_cell)(x, cell, cfg) for cell in cells
        )
        for cell in results:
            done.append(cell)
            if progress is not None:
                progress(len(done), len(cells), f"K={cell.n_components} {cell.covariance_type}")
    done.sort(key=lambda c: (c.covariance_type, c.n_components))
    return done


def choose(cells: Sequence[GridCell]) -> GridCell:
    """Lowest BIC among converged cells (any fitted cell if none converged)."""
    fitted = [c for c in cells if c.bic is not None]
    if not fitted:
        reasons = "; ".join(
            f"K={c.n_components} {c.covariance_type}: {c.skipped}" for c in cells[:5]
        )
        raise TrainingError(f"no grid cell could be fitted: {reasons}")
    pool = [c for c in fitted if c.converged] or fitted
    return min(pool, key=lambda c: c.bic if c.bic is not None else np.inf)


def reference_statistics(spec: FeatureSpec, matrix: np.ndarray) -> dict[str, Any]:
    """Per-feature statistics of the fit rows (as the model sees them before scaling)."""
    stats: dict[str, Any] = {}
    for j, name in enumerate(spec.numeric):
        col = matrix[:, j]
        edges = np.unique(np.quantile(col, np.linspace(0, 1, REFERENCE_BINS + 1)))
        inner = edges[1:-1]
        counts = np.bincount(np.searchsorted(inner, col, side="right"), minlength=inner.size + 1)
        stats[name] = {
            "kind": "numeric",
            "mean": float(col.mean()),
            "std": float(col.std()),
            "min": float(col.min()),
            "max": float(col.max()),
            "bin_edges": inner.tolist(),  # interior edges; the outer bins are open
            "bin_counts": counts.tolist(),
        }
    start = len(spec.numeric)
    for name, cats in spec.categorical.items():
        block = matrix[:, start : start + len(cats)]
        stats[name] = {
            "kind": "categorical",
            "categories": list(cats),
            "frequencies": block.mean(axis=0).tolist(),
        }
        start += len(cats)
    return stats


def train(
    rows: Sequence[Mapping[str, Any]],
    settings: Settings,
    *,
    labels: np.ndarray | None = None,
    spec: FeatureSpec | None = None,
    progress: ProgressCallback | None = None,
    column_notes: Mapping[str, str] | None = None,
) -> ModelBundle:
    """Train a model bundle on the normal rows among ``rows``.

    ``labels`` (0 normal, nonzero anomaly) drops anomalous rows; ``spec`` fixes the
    features (retraining keeps the current model's), otherwise it comes from settings or
    is inferred from the rows. ``column_notes`` (from ``read_table``) join the summary's
    column table: what became of each column and why.
    """
    started = time.perf_counter()
    cfg = settings.model
    n_input = len(rows)
    all_rows = rows
    if labels is not None:
        keep = np.flatnonzero(np.asarray(labels) == 0)
        rows = [rows[int(i)] for i in keep]
    n_dropped_label = n_input - len(rows)
    if not rows:
        raise TrainingError("no normal rows to train on")
    fixed = spec is not None
    label = settings.training.label_column
    if spec is None:
        spec = infer_spec(rows, settings.features, exclude=[label] if label else [])
    columns = describe_columns(
        spec,
        all_rows,
        settings.features,
        exclude=[label] if label else [],
        notes=column_notes,
        fixed=fixed,
    )

    batch = FeatureEncoder(spec, settings.features).encode(rows)
    usable = batch.valid & ~np.isnan(batch.matrix).any(axis=1)
    matrix = batch.matrix[usable]
    n = matrix.shape[0]
    if n < settings.training.min_rows:
        raise TrainingError(
            f"{n} usable normal rows (of {n_input}; {n_dropped_label} labelled anomalous, "
            f"{int((~usable).sum())} invalid or incomplete); training.min_rows is "
            f"{settings.training.min_rows}"
        )

    rng = np.random.default_rng(cfg.random_seed)
    n_cal = max(1, round(n * settings.training.calibration_fraction))
    order = rng.permutation(n)
    cal_x, fit_x = matrix[order[:n_cal]], matrix[order[n_cal:]]

    scaler = StandardScaler().fit(fit_x)
    fit_s = scaler.transform(fit_x)
    cal_s = scaler.transform(cal_x)

    sub = fit_s
    if fit_s.shape[0] > settings.training.bic_subsample_rows:
        pick = rng.choice(fit_s.shape[0], settings.training.bic_subsample_rows, replace=False)
        sub = fit_s[pick]
    grid_started = time.perf_counter()
    cells = search_grid(sub, cfg, settings.training.n_jobs, progress)
    grid_s = time.perf_counter() - grid_started
    best = choose(cells)

    gmm = _make_gmm(best.n_components, best.covariance_type, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded below instead
        gmm.fit(fit_s)

    cal_scores = gmm.score_samples(cal_s)
    thresholds = Thresholds.calibrate(cal_scores, settings.training.severity_percentiles)
    cal_normal = cal_scores[cal_scores >= thresholds.log_likelihood[0]]
    stored = cal_s
    if stored.shape[0] > settings.training.max_calibration_rows_stored:
        stored = stored[: settings.training.max_calibration_rows_stored]

    summary: dict[str, Any] = {
        "rows": {
            "input": n_input,
            "dropped_labelled_anomalous": n_dropped_label,
            "dropped_invalid_or_incomplete": int((~usable).sum()),
            "fit": int(fit_x.shape[0]),
            "calibration": int(n_cal),
            "bic_subsample": int(sub.shape[0]),
            "calibration_split": "random",
        },
        "columns": columns,
        "grid": [asdict(c) for c in cells],
        "chosen": {
            "n_components": best.n_components,
            "covariance_type": best.covariance_type,
            "bic_on_subsample": best.bic,
            "refit_converged": bool(gmm.converged_),
            "refit_n_iter": int(gmm.n_iter_),
        },
        "thresholds": thresholds.to_dict(),
        "calibration_quantiles": {
            str(q): float(np.percentile(cal_scores, q)) for q in CALIBRATION_QUANTILES
        },
        "calibration_mean_log_likelihood": float(cal_scores.mean()),
        "calibration_std_log_likelihood": float(cal_scores.std()),
        # Over calibration rows that do not alert: what the drift monitor compares the
        # window's non-alerting rows with, so faults (which alert) cannot fake a drift.
        "calibration_normal_mean_log_likelihood": float(cal_normal.mean()),
        "calibration_normal_std_log_likelihood": float(cal_normal.std()),
        "reference": reference_statistics(spec, fit_x),
        "libraries": library_versions(),
        "settings": {
            "model": cfg.model_dump(),
            "training": settings.training.model_dump(),
            "features": settings.features.model_dump(),
        },
        "grid_seconds": grid_s,
        "train_seconds": time.perf_counter() - started,
    }
    return ModelBundle(
        spec=spec,
        scaler=scaler,
        mixture=gmm,
        thresholds=thresholds,
        calibration_rows=stored,
        summary=summary,
        created_at=format_time_ms(time.time() * 1000.0),
    )
