"""The ``detector`` command: train, score, evaluate, models, config, run, retrain, demo.

Each command loads settings once (flags > environment > TOML > defaults), calls the same
library code a user would, and turns typed errors into one clear line and an exit code:
2 for bad configuration or input, 1 for anything else that failed on purpose.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from detector.errors import ConfigError, DataError, DetectorError
from detector.settings import Settings, check_config_file, describe_sources, load_settings

app = typer.Typer(
    help="Streaming anomaly detector: Gaussian-mixture scoring with calibrated alerts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="List, inspect, promote and roll back model versions.", no_args_is_help=True
)
config_app = typer.Typer(
    help="Show the effective configuration or check a file.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")

out = Console(soft_wrap=True)
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration file (or DETECTOR_CONFIG)."),
]
ModelDirOpt = Annotated[
    Path | None, typer.Option("--model-dir", "-m", help="Model registry directory (registry.path).")
]
LabelOpt = Annotated[
    str | None, typer.Option("--label-column", "-l", help="Column with 0 normal / 1 anomaly.")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables.")]


def _overrides(model_dir: Path | None = None, **extra: Any) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if model_dir is not None:
        o["registry"] = {"path": str(model_dir)}
    for section_key, value in extra.items():
        if value is not None:
            section, key = section_key.split("__")
            o.setdefault(section, {})[key] = value
    return o


def settings_for(config: Path | None, **overrides: Any) -> Settings:
    return load_settings(config, _overrides(**overrides))


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except (ConfigError, DataError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except DetectorError as exc:
        err.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", highlight=False)
        raise typer.Exit(1) from None


@contextmanager
def progress_bar(enabled: bool, label: str) -> Iterator[Callable[[int, int, str], None] | None]:
    """A rich progress bar on a terminal; nothing in CI, pipes or with --quiet."""
    if not enabled or not err.is_terminal:
        yield None
        return
    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task("", total=None)

        def update(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what)

        yield update


# -- train / score / evaluate ------------------------------------------------------------
@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="CSV or JSON-lines file of (mostly) normal rows.")],
    model_dir: ModelDirOpt = None,
    config: ConfigOpt = None,
    label_column: LabelOpt = None,
    no_promote: Annotated[
        bool, typer.Option("--no-promote", help="Publish without making it CURRENT.")
    ] = False,
    decimal: Annotated[
        str | None,
        typer.Option(
            "--decimal", help='Decimal separator of CSV numbers: "." or "," (features.decimal).'
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train on normal data (BIC search, calibrated thresholds) and publish a model version."""
    from detector.io.tables import read_table, with_temporal
    from detector.model.train import train as train_model
    from detector.registry.store import ModelRegistry

    with _errors():
        settings = settings_for(
            config,
            model_dir=model_dir,
            training__label_column=label_column,
            features__decimal=decimal,
        )
        label = settings.training.label_column
        table = with_temporal(
            read_table(data, settings, label, for_training=True), settings.features.temporal
        )
        with progress_bar(not quiet, "BIC grid") as update:
            bundle = train_model(
                table.rows,
                settings,
                labels=table.labels,
                progress=update,
                column_notes=table.notes,
            )
        registry = ModelRegistry(settings.registry)
        version = registry.publish(bundle, promote=not no_promote)
    if not quiet:
        print_columns(bundle.summary)
        print_grid(bundle.summary)
    s = bundle.summary
    out.print(
        f"published model version [bold]{version}[/bold] to {settings.registry.path}"
        f"{'' if no_promote else ' (CURRENT)'}: K={s['chosen']['n_components']} "
        f"{s['chosen']['covariance_type']}, {s['rows']['fit']} fit rows, "
        f"{s['rows']['calibration']} calibration rows, {s['train_seconds']:.1f} s",
        highlight=False,
    )
    for name, t in bundle.thresholds.to_dict().items():
        out.print(
            f"  {name}: log-likelihood < {t['log_likelihood']:.3f} ({t['percentile']}% of normal)"
        )


# Headers of the column table; stable, like the summary keys they show.
COLUMN_TABLE_HEADERS = ("column", "type", "why", "missing cells")


def print_columns(summary: dict[str, Any]) -> None:
    """What training did with each column (summary["columns"]), as a table."""
    columns = summary.get("columns")
    if not columns:
        return  # a bundle trained before the table existed
    table = RichTable(title="columns (what training did with each)")
    for header in COLUMN_TABLE_HEADERS:
        table.add_column(header, justify="right" if header == "missing cells" else "left")
    for c in columns:
        missing = "" if c["missing_cells"] is None else f"{c['missing_cells']:,}"
        table.add_row(c["column"], c["type"], c["why"], missing)
    out.print(table)


def print_grid(summary: dict[str, Any]) -> None:
    grid = summary["grid"]
    table = RichTable(title="BIC grid (lower is better; * = chosen)")
    cov_types = sorted({c["covariance_type"] for c in grid})
    table.add_column("K", justify="right")
    for cov in cov_types:
        table.add_column(f"{cov} BIC", justify="right")
    chosen = summary["chosen"]
    for k in sorted({c["n_components"] for c in grid}):
        cells = []
        for cov in cov_types:
            c = next(
                (c for c in grid if c["n_components"] == k and c["covariance_type"] == cov), None
            )
            if c is None or c["bic"] is None:
                cells.append("skipped" if c else "")
                continue
            mark = "*" if (k, cov) == (chosen["n_components"], chosen["covariance_type"]) else ""
            conv = "" if c["converged"] else " (nc)"
            cells.append(f"{c['bic']:,.0f}{conv}{mark}")
        table.add_row(str(k), *cells)
    out.print(table)


def _score_file(
    data: Path,
    config: Path | None,
    model_dir: Path | None,
    label_column: str | None,
    version: str | None,
) -> tuple[Any, Any, Any]:
    """The offline scoring path of `score` and `evaluate`: (scorer, table, result)."""
    from detector.io.tables import read_table, with_temporal

    settings = settings_for(config, model_dir=model_dir)
    scorer = _load_scorer(settings, version)
    table = with_temporal(read_table(data, settings, label_column), dict(scorer.spec.temporal))
    return scorer, table, scorer.score(table.rows)


def _load_scorer(settings: Settings, version: str | None = None) -> Any:
    from detector.model.scorer import Scorer
    from detector.registry.store import ModelRegistry

    bundle = ModelRegistry(settings.registry).load(version)
    return Scorer(bundle, settings.features, settings.thresholds)


@app.command()
def score(
    data: Annotated[Path, typer.Argument(help="CSV or JSON-lines file to score.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="CSV written with one row per input row.")
    ],
    model_dir: ModelDirOpt = None,
    config: ConfigOpt = None,
    label_column: LabelOpt = None,
    version: Annotated[str | None, typer.Option(help="Model version (default CURRENT).")] = None,
) -> None:
    """Score a file offline with the same scorer the service uses."""
    with _errors():
        scorer, table, result = _score_file(data, config, model_dir, label_column, version)
        errors = {**result.errors, **table.errors}
        write_scores(output, result, errors, table.labels)
    n_alerts = int((result.severity > 0).sum())
    out.print(
        f"scored {len(table.rows)} rows with model {scorer.version}: {n_alerts} alerts, "
        f"{len(errors)} invalid rows -> {output}",
        highlight=False,
    )


def write_scores(path: Path, result: Any, errors: dict[int, tuple[str, str]], labels: Any) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        head = [
            "row",
            "anomaly_score",
            "log_likelihood",
            "percentile",
            "severity",
            "threshold",
            "top_features",
            "error",
        ]
        if labels is not None:
            head.insert(1, "label")
        w.writerow(head)
        for i in range(result.log_likelihood.shape[0]):
            ll = result.log_likelihood[i]
            top = ";".join(
                f"{c.feature}:{c.contribution:.2f}" for c in result.top_features.get(i, [])
            )
            reason = errors.get(i)
            row: list[Any] = [
                i,
                "" if np.isnan(ll) else f"{-ll:.6g}",
                "" if np.isnan(ll) else f"{ll:.6g}",
                "" if np.isnan(result.percentile[i]) else f"{result.percentile[i]:.4g}",
                "" if reason else result.severity_name(i),
                "" if np.isnan(result.threshold[i]) else f"{result.threshold[i]:.6g}",
                top,
                f"{reason[0]}: {reason[1]}" if reason else "",
            ]
            if labels is not None:
                row.insert(1, int(labels[i]))
            w.writerow(row)


@app.command()
def evaluate(
    data: Annotated[Path, typer.Argument(help="Labelled CSV or JSON-lines file.")],
    label_column: Annotated[
        str, typer.Option("--label-column", "-l", help="Column with 0 normal / 1 anomaly.")
    ],
    model_dir: ModelDirOpt = None,
    config: ConfigOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the figures as JSON.")
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Model version (default CURRENT).")] = None,
) -> None:
    """AUROC, AUPRC, and per severity the alert rate on normal rows and recall on anomalies."""
    from detector.model.evaluate import quality

    with _errors():
        scorer, table, result = _score_file(data, config, model_dir, label_column, version)
        assert table.labels is not None
        figures = quality(result, table.labels)
        figures["model_version"] = scorer.version
        if json_out is not None:
            json_out.write_text(json.dumps(figures, indent=2))
        if report is not None:
            from detector.report.html import evaluation_report

            evaluation_report(report, scorer.bundle, result, table.labels, figures)
    print_quality(figures)
    if report is not None:
        out.print(f"report written to {report}")


def print_quality(figures: dict[str, Any]) -> None:
    auroc, auprc = figures["auroc"], figures["auprc"]
    out.print(
        f"model {figures.get('model_version', '')}: {figures['scored']} rows scored "
        f"({figures['normal']} normal, {figures['anomalous']} anomalous, "
        f"{figures['unscored_invalid']} invalid)",
        highlight=False,
    )
    if auroc is not None:
        out.print(f"AUROC {auroc:.4f}   AUPRC {auprc:.4f}")
    t = RichTable()
    for col in ("severity", "alert rate on normal", "recall on anomalous", "precision"):
        t.add_column(col, justify="right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    for name, f in figures["per_severity"].items():
        t.add_row(
            name, pct(f["alert_rate_normal"]), pct(f["recall_anomalous"]), pct(f["precision"])
        )
    out.print(t)


# -- models ------------------------------------------------------------------------------
def _registry(config: Path | None, model_dir: Path | None) -> Any:
    from detector.registry.store import ModelRegistry

    return ModelRegistry(settings_for(config, model_dir=model_dir).registry)


@models_app.command("list")
def models_list(model_dir: ModelDirOpt = None, config: ConfigOpt = None) -> None:
    """Every version, oldest first; CURRENT is marked."""
    with _errors():
        reg = _registry(config, model_dir)
        infos = reg.list()
    t = RichTable(title=f"models in {reg.root}")
    for col in ("", "version", "created", "model", "fit rows", "status"):
        t.add_column(col)
    for i in infos:
        chosen = i.manifest.get("chosen") or {}
        rows = i.manifest.get("rows") or {}
        status = f"rejected: {i.rejected.get('reason')}" if i.rejected else ""
        t.add_row(
            "*" if i.is_current else "",
            i.version,
            i.created_at,
            f"K={chosen.get('n_components')} {chosen.get('covariance_type')}",
            str(rows.get("fit", "")),
            status,
        )
    out.print(t)


@models_app.command("show")
def models_show(
    version: Annotated[str | None, typer.Argument(help="Version (default CURRENT).")] = None,
    model_dir: ModelDirOpt = None,
    config: ConfigOpt = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the model card as HTML.")
    ] = None,
) -> None:
    """Manifest and training summary of one version (verified, then loaded)."""
    with _errors():
        reg = _registry(config, model_dir)
        bundle = reg.load(version)
        info = reg.info(bundle.version)
        if report is not None:
            from detector.report.html import model_card_report

            model_card_report(report, bundle)
    summary = {
        k: v
        for k, v in bundle.summary.items()
        if k not in ("grid", "reference", "settings", "columns")
    }
    out.print_json(data={"manifest": info.manifest, "rejected": info.rejected, "summary": summary})
    print_columns(bundle.summary)
    print_grid(bundle.summary)
    if report is not None:
        out.print(f"model card written to {report}")


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="Version to make CURRENT.")],
    model_dir: ModelDirOpt = None,
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option(help="Promote even a rejected version.")] = False,
) -> None:
    """Verify a version and make it CURRENT (running services reload it)."""
    with _errors():
        _registry(config, model_dir).promote(version, force=force)
    out.print(f"CURRENT is now {version}")


@models_app.command("rollback")
def models_rollback(model_dir: ModelDirOpt = None, config: ConfigOpt = None) -> None:
    """Make the previously promoted version CURRENT again."""
    with _errors():
        version = _registry(config, model_dir).rollback()
    out.print(f"rolled back: CURRENT is now {version}")


@models_app.command("prune")
def models_prune(model_dir: ModelDirOpt = None, config: ConfigOpt = None) -> None:
    """Delete all but the newest registry.keep_versions versions (never CURRENT)."""
    with _errors():
        gone = _registry(config, model_dir).prune()
    out.print(f"deleted {len(gone)} versions: {', '.join(gone) or '-'}")


# -- config ------------------------------------------------------------------------------
@config_app.command("show")
def config_show(config: ConfigOpt = None, model_dir: ModelDirOpt = None) -> None:
    """The effective configuration, where each value came from; secrets masked."""
    with _errors():
        overrides = _overrides(model_dir=model_dir)
        settings = load_settings(config, overrides)
        rows = describe_sources(settings, config, overrides)
    t = RichTable(title="effective configuration")
    for col in ("key", "value", "source"):
        t.add_column(col)
    for key, value, origin in rows:
        t.add_row(key, value, origin)
    out.print(t)


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="TOML file to validate.")]) -> None:
    """Validate a configuration file on its own; exit 2 naming each bad key."""
    with _errors():
        check_config_file(file)
    out.print(f"{file}: OK")


def main() -> None:
    # Commands registered by other modules (run, retrain, demo) are imported here so that
    # `detector --help` lists them without importing Kafka for `detector train`.
    from detector.cli import service_commands, simulate_command, topic_commands  # noqa: F401

    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
