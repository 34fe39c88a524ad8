"""The ``detector`` command: train, score, evaluate, models, config, run, retrain, demo.

Each command loads settings once (flags > environment > TOML > defaults), checks what it
needs before starting anything, calls the same library code a user would, and turns
typed errors into one clear line and an exit code (``detector.cli.exits``: 0 ok,
1 failed, 2 usage / configuration / input, 3 broker). Output for people goes to stdout
in tables (full width when stdout is not a terminal, so ids are never cut); listing
commands take ``--json`` for scripts; ``-o -`` is stdout.

The application and what every command shares are in ``cli.app``; the commands register
themselves on it from their own modules, which this one imports.
"""

from __future__ import annotations

import sys

# The Kafka-free commands register on import (`detector train` never imports Kafka)...
from detector.cli import model_commands, registry_commands  # noqa: F401
from detector.cli.app import app, err
from detector.cli.exits import ExitCode
from detector.cli.model_commands import SCORE_COLUMNS

__all__ = ["SCORE_COLUMNS", "app", "main"]


def main() -> None:
    # ...and the ones that need Kafka (run, retrain, demo, topics, simulate, backtest) are
    # imported here, so that `detector --help` lists them all.
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
