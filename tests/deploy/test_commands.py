"""Every `detector ...` command line in deploy/ parses against the real CLI, and `make
image` builds with an engine that answers and says so, exiting 0, where none does."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import detector.cli.service_commands
import detector.cli.simulate_command
import detector.cli.topic_commands  # noqa: F401  (the commands main() registers)
from detector.cli.main import app
from tests.deploy.kustomize_render import build, load_docs, pod_spec
from tests.deploy.tools import DEPLOY, K8S, ROOT


def command_lines() -> list[tuple[str, list[str]]]:
    lines: list[tuple[str, list[str]]] = []
    services = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for name, service in services.items():
        if "build" in service and "command" in service:
            lines.append((f"compose {name}", list(service["command"])))
    docs = build(K8S / "base") + [
        d for p in sorted((K8S / "jobs").glob("*.yaml")) for d in load_docs(p)
    ]
    for doc in docs:
        pod = pod_spec(doc)
        for c in pod["containers"] if pod else []:
            if not c["image"].split(":")[0].endswith("detector"):
                continue
            if "command" in c:  # a shell wrapper: the detector line inside it
                script = " ".join(c["args"])
                for m in re.finditer(r"detector (\w[^;]*)", script):
                    lines.append((f"{doc['metadata']['name']} (sh)", shlex.split(m.group(1))))
            else:
                lines.append((doc["metadata"]["name"], list(c["args"])))
    readme = (DEPLOY / "README.md").read_text()
    for m in re.finditer(
        r"(?:^\s*|\s--\s)detector ((?:simulate|produce|consume|models|config)[^\n#`]*)",
        readme,
        re.M,
    ):
        lines.append(("README", shlex.split(m.group(1).replace("\\", ""))))
    return lines


def parse(args: list[str]) -> None:
    """Parse the line as `detector` would without running it: with --help appended, an
    unknown command or option still fails (exit 2, before help is printed)."""
    r = CliRunner().invoke(app, [*args, "--help"])
    if r.exit_code != 0:
        raise ValueError(f"detector {' '.join(args)}: exit {r.exit_code}: {r.output.strip()}")


LINES = command_lines()


@pytest.mark.parametrize("where,args", LINES, ids=[f"{w}: {' '.join(a)}" for w, a in LINES])
def test_every_command_line_in_deploy_parses(where: str, args: list[str]) -> None:
    parse(args)


def test_a_wrong_option_does_not_parse() -> None:
    with pytest.raises(ValueError, match="--rates"):
        parse(["simulate", "--rates", "5"])
    with pytest.raises(ValueError, match="--no-such-flag"):
        parse(["retrain", "--every", "1h", "--no-such-flag"])
    with pytest.raises(ValueError, match="simulatte"):
        parse(["simulatte"])


def test_make_image_without_an_engine_says_so_and_exits_0(tmp_path: Path) -> None:
    # Given a PATH with make and a shell but neither docker nor podman
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "sh", "echo"):
        path = next(Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists())
        (bin_dir / tool).symlink_to(path)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    # When `make image` runs
    r = subprocess.run(["make", "-s", "image"], cwd=ROOT, env=env, capture_output=True, text=True)
    # Then it exits 0 and says clearly that nothing was built, and how to build it
    assert r.returncode == 0, r.stderr
    assert "no working container engine" in r.stdout and "NOT built" in r.stdout
    assert "docker build -f deploy/Dockerfile" in r.stdout


def test_make_image_builds_with_the_engine_that_answers(tmp_path: Path) -> None:
    # Given docker installed without a daemon, and a podman whose engine answers
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("make", "sh"):
        path = next(Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists())
        (bin_dir / tool).symlink_to(path)
    calls = tmp_path / "calls"
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "podman").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    for engine in ("docker", "podman"):
        os.chmod(bin_dir / engine, 0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    # When `make image IMAGE=...` runs
    r = subprocess.run(
        ["make", "-s", "image", "IMAGE=team/detector:1.2.3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    # Then it says docker does not answer and builds with podman, from the repository root
    assert r.returncode == 0, r.stdout + r.stderr
    assert "docker is installed but its engine does not answer" in r.stdout
    assert calls.read_text().splitlines() == [
        "info",
        "build -f deploy/Dockerfile -t team/detector:1.2.3 .",
    ]
