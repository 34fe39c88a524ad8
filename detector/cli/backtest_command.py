"""`detector backtest` and `detector synthetic`: replay a file as the service would see it.

``backtest`` needs no broker: it streams the file's rows in event-time order through the
service's pipeline, with the retraining job on the event-time clock
(``detector.backtest``), and reports JSON, an HTML page and the alerts as JSON lines.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from detector.cli.app import (
    ConfigOpt,
    ModelDirOpt,
    QuietOpt,
    _errors,
    app,
    err,
    out,
    progress_bar,
    settings_for,
)
from detector.cli.checks import UsageError, check_output
from detector.cli.service_commands import parse_duration_s
from detector.logs import setup_logging


@app.command()
def backtest(
    data: Annotated[
        Path | None, typer.Argument(help="CSV or JSON-lines file, in any row order.")
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option("--label-column", "-l", help="Column with 0 normal / 1 anomaly (optional)."),
    ] = None,
    time_column: Annotated[
        str | None,
        typer.Option(
            "--time-column",
            help="Column with the event time (default: detected by name); none = file order.",
        ),
    ] = None,
    train_until: Annotated[
        str | None,
        typer.Option(help="Train on rows before this event time (ISO 8601 or epoch)."),
    ] = None,
    train_rows: Annotated[
        int | None, typer.Option(min=1, help="Train on the first N rows in event-time order.")
    ] = None,
    train_fraction: Annotated[
        float | None,
        typer.Option(
            min=0.01, max=0.99, help="Train on this share of the first rows (default 0.3)."
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", help="Take this version of --model-dir (or 'current') instead of training."
        ),
    ] = None,
    retrain_every: Annotated[
        str, typer.Option(help="Scheduled retraining in event time, e.g. 1h; 'off' for none.")
    ] = "1h",
    retrain_on_drift: Annotated[
        bool, typer.Option(help="Also retrain on a drift event (as `retrain --on-drift`).")
    ] = True,
    no_retrain: Annotated[
        bool, typer.Option("--no-retrain", help="No retraining at all: one model throughout.")
    ] = False,
    windows: Annotated[int, typer.Option(min=1, max=1000, help="Windows of the report.")] = 10,
    window_by: Annotated[
        str, typer.Option(help="Windows of equal event time, equal rows, or auto.")
    ] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the figures as JSON; - for stdout.")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Write the HTML report here.")] = None,
    alerts_out: Annotated[
        Path | None, typer.Option("--alerts", help="Write the alerts as JSON lines; - for stdout.")
    ] = None,
    topic: Annotated[
        str | None,
        typer.Option("--topic", help="Read the stream from this topic instead of a file."),
    ] = None,
    from_time: Annotated[
        str | None, typer.Option(help="With --topic: records stamped from this time on.")
    ] = None,
    to_time: Annotated[
        str | None, typer.Option(help="With --topic: records stamped up to this time.")
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option("--bootstrap", help="Kafka bootstrap servers (kafka.bootstrap_servers)."),
    ] = None,
    model_dir: ModelDirOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Replay a file through the service's pipeline with retraining on the event-time clock.

    Without --model, trains on the first part (--train-until, --train-rows or
    --train-fraction) and streams the rest; with --model, streams the whole file unless a
    split is given. Reports the alert rate (on normal rows when labelled), AUROC, AUPRC,
    recall and detection delay of labelled anomaly windows, overall and per window, and
    every drift event, retrain and reload.
    """
    from detector.backtest.driver import Split, run_backtest
    from detector.backtest.run import Plan
    from detector.backtest.source import read_stream
    from detector.registry.store import ModelRegistry

    to_stdout = [p for p in (json_out, alerts_out) if p is not None and str(p) == "-"]
    with _errors():
        if len(to_stdout) > 1:
            raise UsageError("--json - and --alerts -: only one of them can go to stdout")
        if sum(x is not None for x in (train_until, train_rows, train_fraction)) > 1:
            raise UsageError("choose one of --train-until, --train-rows, --train-fraction")
        if window_by not in ("auto", "time", "rows"):
            raise UsageError(f"--window-by {window_by!r}: choose auto, time or rows")
        for path, option in ((json_out, "--json"), (report, "--report"), (alerts_out, "--alerts")):
            check_output(path, option)
        if (data is None) == (topic is None):
            raise UsageError("give a DATA file or --topic TOPIC (one of them)")
        if topic is None and (from_time or to_time):
            raise UsageError("--from-time and --to-time read a topic: add --topic")
        settings = settings_for(config, model_dir=model_dir, kafka__bootstrap_servers=bootstrap)
        # Drift events and retrains are in the report: log lines only for errors.
        setup_logging(settings.service.log_format, "ERROR")
        every_s = (
            None
            if retrain_every.lower() in ("off", "none", "0")
            else parse_duration_s(retrain_every)
        )
        plan = Plan(
            batch_rows=settings.kafka.max_poll_records,
            topic=settings.kafka.input_topic,
            retrain_every_s=None if no_retrain else every_s,
            retrain_on_drift=retrain_on_drift and not no_retrain,
        )
        label = label_column or settings.training.label_column
        if topic is not None:
            stream = _read_topic(settings, topic, from_time, to_time)
        else:
            assert data is not None
            stream = read_stream(data, settings, label, time_column)
        if label is None:
            _warn_unnamed_label(stream.rows[0] if stream.rows else {})
        split = None
        if train_rows is not None:
            split = Split(rows=train_rows)
        elif train_until is not None:
            split = Split(until_ms=_time_option(train_until, "--train-until"))
        elif train_fraction is not None:
            split = Split(fraction=train_fraction)
        source = None
        if model is not None:
            version = None if model.lower() == "current" else model
            source = (ModelRegistry(settings.registry), version)
        with progress_bar(not quiet, "backtest") as update:
            result = run_backtest(
                stream,
                settings,
                plan,
                windows=windows,
                window_by=window_by,
                split=split,
                model=source,
                progress=update,
            )
        summary = result.summary
        summary["data"] = str(data) if data is not None else f"topic {topic}"
        if json_out is not None and str(json_out) != "-":
            json_out.write_text(json.dumps(summary, indent=2, default=str))
        if alerts_out is not None and str(alerts_out) != "-":
            with alerts_out.open("wb") as fh:
                for a in result.replay.alerts:
                    fh.write(orjson.dumps(a) + b"\n")
        if report is not None:
            from detector.backtest.report import backtest_report

            backtest_report(report, result)
    if json_out is not None and str(json_out) == "-":
        typer.echo(json.dumps(summary, indent=2, default=str))
    if alerts_out is not None and str(alerts_out) == "-":
        for a in result.replay.alerts:
            typer.echo(orjson.dumps(a).decode())
    console = err if to_stdout else out
    if not quiet:
        print_backtest(summary, console)
    if report is not None:
        console.print(f"report written to {report}")


def _time_option(text: str, option: str) -> float:
    """ISO 8601 or an epoch number (seconds or ms), as events carry them."""
    from detector.errors import BadEventError
    from detector.events import parse_time_ms

    value: object = text
    with contextlib.suppress(ValueError):
        value = float(text)
    try:
        return parse_time_ms(value, option)
    except BadEventError as exc:
        raise UsageError(exc.message) from None


def _read_topic(settings: Any, topic: str, from_time: str | None, to_time: str | None) -> Any:
    from detector.backtest.topic import read_topic
    from detector.cli.checks import check_kafka
    from detector.stream.reach import check_reachable

    check_kafka(settings)
    check_reachable(settings.kafka.bootstrap_servers, settings.kafka.bootstrap_timeout_ms / 1e3)
    return read_topic(
        settings,
        topic,
        _time_option(from_time, "--from-time") if from_time else None,
        _time_option(to_time, "--to-time") if to_time else None,
    )


def _warn_unnamed_label(row: dict[str, object]) -> None:
    named = [k for k in row if k.lower() in ("label", "anomaly", "is_anomaly", "attack", "class")]
    if named:
        err.print(
            f"[yellow]warning:[/yellow] column {named[0]!r} looks like a label but is used as a "
            f"feature; pass --label-column {named[0]} to score against it",
            highlight=False,
        )


def print_backtest(s: dict[str, object], console: object) -> None:
    from rich.console import Console

    assert isinstance(console, Console)
    o = s["overall"]
    st = s["stream"]
    assert isinstance(o, dict) and isinstance(st, dict)

    def pct(v: object) -> str:
        return "-" if v is None else f"{100 * float(v):.2f}%"  # type: ignore[arg-type]

    console.print(
        f"streamed {o['rows']:,} rows ({st['first_event_time']} .. {st['last_event_time']}, "
        f"time column {st['time_column'] or 'none'}; trained on {st['trained_on_rows']:,}): "
        f"{o['alerts']:,} alerts, {o['dead_letters']:,} dead letters",
        highlight=False,
    )
    if st["labelled"]:
        d = s["detection_delay"]
        assert isinstance(d, dict)
        auroc = "-" if o["auroc"] is None else f"{o['auroc']:.4f}"
        auprc = "-" if o["auprc"] is None else f"{o['auprc']:.4f}"
        console.print(
            f"AUROC {auroc}   AUPRC {auprc}   alert rate on normal rows "
            f"{pct(o['alert_rate_normal'])} (target {pct(o['target_alert_rate'])})   "
            f"recall {pct(o['recall_alerted'])}",
            highlight=False,
        )
        median = d["delay_s_median"]
        console.print(
            f"labelled anomaly windows: {d['detected']} of {d['windows']} detected, median delay "
            + ("-" if median is None else f"{median:.0f} s"),
            highlight=False,
        )
    else:
        console.print(f"alert rate {pct(o['alert_rate'])} (target {pct(o['target_alert_rate'])})")
    retrains = s["retrains"]
    assert isinstance(retrains, list)
    drift = s["drift_events"]
    assert isinstance(drift, list)
    console.print(
        f"{len(drift)} drift events; {len(retrains)} retrains ("
        + (", ".join(f"{k} {v}" for k, v in s["retrain_outcomes"].items()) or "none")  # type: ignore[attr-defined]
        + f"); {len(s['reloads'])} reloads",  # type: ignore[arg-type]
        highlight=False,
    )
    for r in retrains[:20]:
        console.print(
            f"  {r['event_time']} {r['trigger']}: {r['outcome']}"
            + (f" {r['version']}" if r["version"] else "")
            + (f" ({r['reason']})" if r["reason"] else ""),
            highlight=False,
        )
    if len(retrains) > 20:
        console.print(f"  ... {len(retrains) - 20} more in the JSON")
    p = s.get("pace")
    if isinstance(p, dict) and p["advice"]:
        console.print(f"[yellow]pace:[/] {p['advice']}", highlight=False)


@app.command()
def synthetic(
    output: Annotated[Path, typer.Argument(help="CSV file to write.")],
    entities: Annotated[int, typer.Option(min=1, max=10_000, help="Machines in the fleet.")] = 8,
    days: Annotated[float, typer.Option(min=0.01, help="Days of readings.")] = 6.0,
    interval_s: Annotated[float, typer.Option(min=0.001, help="Seconds between readings.")] = 60.0,
    faults: Annotated[int, typer.Option(min=0, help="Labelled faults injected.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 0,
) -> None:
    """Write a drifting fleet (daily cycle, slow drift, a level shift, labelled faults) as CSV."""
    from detector.backtest.synthetic import FleetShape, write_fleet_csv

    with _errors():
        check_output(output, "OUTPUT")
        shape = FleetShape(
            n_entities=entities, days=days, interval_s=interval_s, faults=faults, seed=seed
        )
        rows = write_fleet_csv(output, shape)
    out.print(f"wrote {rows:,} rows to {output} (label column: label)", highlight=False)
