"""`detector models ...` and `detector config ...`: the registry and the configuration.

Listings print a table (full width off a terminal, so version ids are never cut) or,
with ``--json``, JSON alone on stdout for scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table as RichTable

from detector.cli.app import (
    ConfigOpt,
    ModelDirOpt,
    _errors,
    _overrides,
    config_app,
    models_app,
    out,
    print_json,
    settings_for,
)
from detector.cli.checks import check_output
from detector.cli.model_commands import print_columns, print_grid
from detector.settings import check_config_file, load_settings


# -- models ------------------------------------------------------------------------------
def _registry(config: Path | None, model_dir: Path | None) -> Any:
    from detector.registry.topic import open_registry

    settings = settings_for(config, model_dir=model_dir)
    return open_registry(settings.registry, settings.kafka)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead.")]


def version_info(info: Any) -> dict[str, Any]:
    """One registry version as ``models list --json`` prints it."""
    chosen = info.manifest.get("chosen") or {}
    rows = info.manifest.get("rows") or {}
    return {
        "version": info.version,
        "current": bool(info.is_current),
        "created_at": info.created_at,
        "n_components": chosen.get("n_components"),
        "covariance_type": chosen.get("covariance_type"),
        "fit_rows": rows.get("fit"),
        "rejected": info.rejected or None,
    }


@models_app.command("list")
def models_list(
    model_dir: ModelDirOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Every version, oldest first; CURRENT is marked."""
    with _errors():
        reg = _registry(config, model_dir)
        infos = [version_info(i) for i in reg.list()]
    if as_json:
        print_json(infos)
        return
    t = RichTable(title=f"models in {reg.root}")
    t.add_column("")
    # Version ids are what `models promote` takes: never shortened, even on a narrow terminal.
    t.add_column(
        "version", no_wrap=True, min_width=max((len(i["version"]) for i in infos), default=7)
    )
    for col in ("created", "model", "fit rows", "status"):
        t.add_column(col)
    for i in infos:
        rejected = i["rejected"]
        t.add_row(
            "*" if i["current"] else "",
            i["version"],
            i["created_at"],
            f"K={i['n_components']} {i['covariance_type']}",
            "" if i["fit_rows"] is None else str(i["fit_rows"]),
            f"rejected: {rejected.get('reason')}" if rejected else "",
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
    as_json: JsonOpt = False,
) -> None:
    """Manifest and training summary of one version (verified, then loaded)."""
    with _errors():
        check_output(report, "--report")
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
    doc = {"manifest": info.manifest, "rejected": info.rejected, "summary": summary}
    if as_json:
        print_json(doc)  # the JSON alone: no tables, no report line
        return
    out.print_json(data=doc, default=str)
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
def models_prune(
    model_dir: ModelDirOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False
) -> None:
    """Delete all but the newest registry.keep_versions versions (never CURRENT)."""
    with _errors():
        gone = _registry(config, model_dir).prune()
    if as_json:
        print_json({"deleted": list(gone)})
        return
    out.print(f"deleted {len(gone)} versions: {', '.join(gone) or '-'}", highlight=False)


# -- config ------------------------------------------------------------------------------
@config_app.command("show")
def config_show(
    config: ConfigOpt = None, model_dir: ModelDirOpt = None, as_json: JsonOpt = False
) -> None:
    """The effective configuration as TOML, each value's source in a comment; secrets masked.

    Every section and key is there; unset keys and secrets are commented out, so the
    output is itself a configuration file that `detector config check` accepts.
    """
    from detector.settings_doc import effective_entries, effective_json, render_effective_toml

    with _errors():
        overrides = _overrides(model_dir=model_dir)
        settings = load_settings(config, overrides)
        entries = effective_entries(settings, config, overrides)
    if as_json:
        print_json(effective_json(entries))
    else:
        typer.echo(render_effective_toml(entries), nl=False)


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="TOML file to validate.")]) -> None:
    """Validate a configuration file on its own (environment ignored); exit 2 naming each bad key."""
    with _errors():
        check_config_file(file)
    out.print(f"{file}: OK")
