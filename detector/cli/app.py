"""The ``detector`` Typer application and what its commands share.

Options (``--config``, ``--model-dir``...), the consoles, turning typed errors into one line
and an exit code, settings from flags, and the progress bar. Command modules import from
here and never from each other or from ``cli.main``, so the CLI has no import circle.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from detector.cli.checks import UsageError
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
