"""Keep the demo's console for the demo: every log record goes to a file in the run folder.

kafka-python logs connection refusals before the bundled broker is up, group and
metadata chatter while it runs, and the service logs drift as warnings: interleaved with
the live view, those lines read as failures. For the length of the demo the root logger
(and the ``detector`` and ``kafka`` loggers, in case a set-up gave them handlers of their
own) write to ``demo.log`` only; Python warnings and exceptions in threads go there too.
The live view shows our own noteworthy events (drift, retrain, reload) itself.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(threadName)s %(name)s: %(message)s"
# Loggers that may hold handlers of their own; they write to the file while the demo runs.
_NAMED = ("detector", "kafka")
log = logging.getLogger(__name__)


@contextmanager
def logs_to_file(path: Path, thread_errors: list[str] | None = None) -> Iterator[Path]:
    """Route all logging to ``path`` until the block ends; restore the set-up afterwards.

    ``thread_errors`` collects a one-line description of each exception that ends a
    thread (the traceback goes to the file), so the demo can say one went wrong.
    """
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved_named = {
        name: (lg.handlers[:], lg.propagate, lg.level)
        for name, lg in ((n, logging.getLogger(n)) for n in _NAMED)
    }
    saved_hook = threading.excepthook
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in _NAMED:
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # kafka-python at INFO logs every connection step; WARNING keeps the file readable.
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("detector").setLevel(logging.INFO)

    def on_thread_error(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread else "?"
        log.error("thread %s stopped", name, exc_info=args.exc_value)
        if thread_errors is not None:
            thread_errors.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = on_thread_error
    with warnings.catch_warnings():
        logging.captureWarnings(True)
        try:
            yield path
        finally:
            logging.captureWarnings(False)
            threading.excepthook = saved_hook
            root.handlers[:], level = saved_root
            root.setLevel(level)
            for name, (handlers, propagate, lvl) in saved_named.items():
                lg = logging.getLogger(name)
                lg.handlers[:] = handlers
                lg.propagate = propagate
                lg.setLevel(lvl)
            handler.close()
