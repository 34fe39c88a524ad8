"""``detector train``, ``score`` and ``evaluate``: the model commands, Kafka-free."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import IO, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table as RichTable

from detector.cli.app import (
    ConfigOpt,
    LabelOpt,
    ModelDirOpt,
    QuietOpt,
    _errors,
    app,
    err,
    out,
    print_json,
    progress_bar,
    settings_for,
)
from detector.cli.checks import check_output
from detector.settings import Settings


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
    from detector.io.tables import read_table
    from detector.model.choose import train_table
    from detector.registry.topic import open_registry

    with _errors():
        settings = settings_for(
            config,
            model_dir=model_dir,
            training__label_column=label_column,
            features__decimal=decimal,
        )
        label = settings.training.label_column
        table = read_table(data, settings, label, for_training=True)
        with progress_bar(not quiet, "BIC grid") as update:
            bundle = train_table(
                table.rows,
                table.entities,
                table.times,
                settings,
                labels=table.labels,
                progress=update,
                column_notes=table.notes,
            )
        registry = open_registry(settings.registry, settings.kafka)
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
    choice = s.get("temporal_choice")
    if choice:
        from detector.model.choose import describe_choice

        out.print(f"temporal features (features.temporal_auto): {describe_choice(choice)}")


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
    table = with_temporal(read_table(data, settings, label_column), scorer.spec.temporal_plan)
    return scorer, table, scorer.score(table.rows)


def _load_scorer(settings: Settings, version: str | None = None) -> Any:
    from detector.model.scorer import Scorer
    from detector.registry.topic import open_registry

    bundle = open_registry(settings.registry, settings.kafka).load(version)
    return Scorer(bundle, settings.features, settings.thresholds)


@app.command()
def score(
    data: Annotated[Path, typer.Argument(help="CSV or JSON-lines file to score.")],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="CSV written with one row per input row; - for stdout."
        ),
    ],
    model_dir: ModelDirOpt = None,
    config: ConfigOpt = None,
    label_column: LabelOpt = None,
    version: Annotated[str | None, typer.Option(help="Model version (default CURRENT).")] = None,
) -> None:
    """Score a file offline with the same scorer the service uses.

    Columns: log_likelihood (higher = more normal); anomaly_score = -log_likelihood (for sorting; negative for very normal rows); percentile: percent (0-100) of held-out normal events that scored this low or lower; p_value: the same as a share (0-1); threshold: the log-likelihood threshold crossed.
    """
    to_stdout = str(output) == "-"
    with _errors():
        check_output(output, "--output")
        scorer, table, result = _score_file(data, config, model_dir, label_column, version)
        errors = {**result.errors, **table.errors}
        if to_stdout:
            write_scores(sys.stdout, result, errors, table.labels)
            sys.stdout.flush()
        else:
            with output.open("w", newline="") as fh:
                write_scores(fh, result, errors, table.labels)
    n_alerts = int((result.severity > 0).sum())
    # With the CSV on stdout the summary goes to stderr, so a pipe gets only the CSV.
    (err if to_stdout else out).print(
        f"scored {len(table.rows)} rows with model {scorer.version}: {n_alerts} alerts, "
        f"{len(errors)} invalid rows -> {'stdout' if to_stdout else output}",
        highlight=False,
    )


SCORE_COLUMNS = (
    "row",
    "anomaly_score",
    "log_likelihood",
    "percentile",
    "p_value",
    "severity",
    "threshold",
    "top_features",
    "error",
)


def write_scores(fh: IO[str], result: Any, errors: dict[int, tuple[str, str]], labels: Any) -> None:
    """One CSV row per input row (``SCORE_COLUMNS``; ``label`` after ``row`` when given).

    Units as everywhere (the README's "one sign, one unit"): ``log_likelihood`` is the
    log density, ``anomaly_score`` its negation, ``percentile`` a percent (0-100),
    ``p_value`` the same as a share (0-1), ``threshold`` a log-likelihood.
    """
    w = csv.writer(fh)
    head = list(SCORE_COLUMNS)
    if labels is not None:
        head.insert(1, "label")
    w.writerow(head)
    for i in range(result.log_likelihood.shape[0]):
        ll = result.log_likelihood[i]
        pct = result.percentile[i]
        top = ";".join(f"{c.feature}:{c.contribution:.2f}" for c in result.top_features.get(i, []))
        reason = errors.get(i)
        row: list[Any] = [
            i,
            "" if np.isnan(ll) else f"{-ll:.6g}",
            "" if np.isnan(ll) else f"{ll:.6g}",
            "" if np.isnan(pct) else f"{pct:.4g}",
            "" if np.isnan(pct) else f"{pct / 100.0:.4g}",
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
        Path | None,
        typer.Option("--json", help="Write the figures as JSON to this file; - for stdout."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Model version (default CURRENT).")] = None,
) -> None:
    """AUROC, AUPRC, and per severity the alert rate on normal rows and recall on anomalies."""
    from detector.model.evaluate import quality

    json_to_stdout = json_out is not None and str(json_out) == "-"
    with _errors():
        check_output(json_out, "--json")
        check_output(report, "--report")
        scorer, table, result = _score_file(data, config, model_dir, label_column, version)
        assert table.labels is not None
        figures = quality(result, table.labels)
        figures["model_version"] = scorer.version
        if json_out is not None and not json_to_stdout:
            json_out.write_text(json.dumps(figures, indent=2))
        if report is not None:
            from detector.report.html import evaluation_report

            evaluation_report(report, scorer.bundle, result, table.labels, figures)
    if json_to_stdout:
        print_json(figures)  # stdout is the JSON alone; the human summary goes to stderr
    print_quality(figures, err if json_to_stdout else out)
    if report is not None:
        (err if json_to_stdout else out).print(f"report written to {report}")


def print_quality(figures: dict[str, Any], console: Console = out) -> None:
    auroc, auprc = figures["auroc"], figures["auprc"]
    console.print(
        f"model {figures.get('model_version', '')}: {figures['scored']} rows scored "
        f"({figures['normal']} normal, {figures['anomalous']} anomalous, "
        f"{figures['unscored_invalid']} invalid)",
        highlight=False,
    )
    if auroc is not None:
        console.print(f"AUROC {auroc:.4f}   AUPRC {auprc:.4f}")
    t = RichTable()
    for col in ("severity", "alert rate on normal", "recall on anomalous", "precision"):
        t.add_column(col, justify="right")

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    for name, f in figures["per_severity"].items():
        t.add_row(
            name, pct(f["alert_rate_normal"]), pct(f["recall_anomalous"]), pct(f["precision"])
        )
    console.print(t)
