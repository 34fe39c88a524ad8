"""Where the external checkers are, and how a test says it could not run one."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def find_tool(name: str) -> str | None:
    """On PATH, beside this interpreter (pip-installed wrappers), or in ~/go/bin (go install)."""
    candidates = [
        shutil.which(name),
        str(Path(sys.executable).parent / name),
        str(Path(os.environ.get("GOPATH", Path.home() / "go")) / "bin" / name),
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def report_missing(what: str, how: str) -> None:
    """Printed (pytest -s / -rA show it) before the test skips: never a silent pass."""
    print(f"\n[deploy checks] {what} NOT run: {how}", file=sys.stderr)
