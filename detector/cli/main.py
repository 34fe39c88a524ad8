"""The ``detector`` command: train, score, evaluate, models, config, run, retrain, demo.

Each command loads settings once (flags > environment > TOML > defaults), checks what it
needs before starting anything, calls the same library code a user would, and turns
typed errors into one clear line and an exit code (``detector.cli.exits``: 0 ok,
1 failed, 2 usage / configuration / input, 3 broker). Output for people goes to stdout
in tables (full width when stdout is not a terminal, so ids are never cut); listing
commands take ``--json`` for scripts; ``-o -`` is stdout.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable

from detector.cli.checks import UsageError, check_output
from detector.cli.exits import ExitCode, is_broker_error
from detector.errors import ConfigError, DataError, DetectorError
from detector.logs import describe_error
from detector.settings import Settings, load_settings

app = typer.Typer(
    help="Streaming anomaly detector: Gaussian-mixture scoring with calibrated alerts.",
    epilog=(
        "Exit codes: 0 ok; 1 failed (no model, model refused, training or retrain failed); "
        "2 usage, configuration or input error; 3 Kafka broker unreachable or failing; "
        "130 interrupted."
    ),
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
err = Console(stderr=True, soft_wrap=True)  # an error line is never cut in two
# Not a terminal (a pipe, a file, CI): tables as wide as their content, never cut at 80.
PIPE_WIDTH = 10_000


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (
        f"detector {v('detector')} (Python {sys.version.split()[0]}, "
        f"scikit-learn {v('scikit-learn')}, kafka-python {v('kafka-python')})"
    )


def _print_version(value: bool) -> None:
    if value:
        typer.echo(_version())
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version (and of Python, scikit-learn, kafka-python) and exit.",
        ),
    ] = False,
) -> None:
    """Streaming anomaly detector: Gaussian-mixture scoring with calibrated alerts."""
    out.width = None if out.is_terminal else PIPE_WIDTH  # type: ignore[assignment]


def print_json(data: Any) -> None:
    """JSON for scripts: plain text on stdout, no colours, no wrapping."""
    typer.echo(json.dumps(data, indent=2, default=str))


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


def error_line(message: str) -> None:
    """``error: MESSAGE`` on stderr (the message is text, never rich markup)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)


@contextmanager
def _errors() -> Iterator[None]:
    """Typed errors -> one line on stderr and the exit code of ``detector.cli.exits``."""
    try:
        yield
    except (ConfigError, DataError, UsageError) as exc:
        error_line(str(exc))
        raise typer.Exit(ExitCode.USAGE) from None
    except DetectorError as exc:
        if is_broker_error(exc):
            error_line(str(exc))
            raise typer.Exit(ExitCode.BROKER) from None
        error_line(f"{type(exc).__name__}: {exc}")
        raise typer.Exit(ExitCode.FAILED) from None
    except Exception as exc:
        if is_broker_error(exc):
            error_line(f"Kafka: {describe_error(exc)}")
            raise typer.Exit(ExitCode.BROKER) from None
        if isinstance(exc, OSError) and exc.filename is not None:
            error_line(f"{exc.filename}: {exc.strerror}")
            raise typer.Exit(ExitCode.USAGE) from None
        raise


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


# The registry and configuration commands (Kafka-free) live in their own module.
from detector.cli import registry_commands  # noqa: E402, F401


def main() -> None:
    # Commands registered by other modules (run, retrain, demo) are imported here so that
    # `detector --help` lists them without importing Kafka for `detector train`.
    from detector.cli import (  # noqa: F401
        backtest_command,
        service_commands,
        simulate_command,
        topic_commands,
    )

    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
