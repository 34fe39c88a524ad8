"""No secret value ever appears in an output: a sentinel secret grepped for in every one.

Outputs covered: `config show`, `config check`, unknown-key errors from TOML and from the
environment (a misspelt secret key is still a secret), the error of a bad value for a
secret field, and the logs of `detector run` failing to reach a broker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detector.cli.main import app
from detector.errors import ConfigError
from detector.registry.store import ModelRegistry
from detector.settings import RegistrySettings, load_settings, secret_keys

SENTINEL = "S3NTINEL-do-not-print-4711"
ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_every_secret_setting_is_known() -> None:
    # Given the settings class / When its secret fields are listed / Then both secrets are there
    assert {"kafka.sasl_password", "registry.signing_key"} <= secret_keys()


@pytest.mark.parametrize(
    "text, named",
    [
        (f'[kafka]\nsasl_passwd = "{SENTINEL}"\n', "kafka.sasl_passwd: unknown key"),
        (f'[registry]\nsigning_keys = "{SENTINEL}"\n', "registry.signing_keys: unknown key"),
        (f'[kafak]\nsasl_password = "{SENTINEL}"\n', "kafak: unknown key"),
        (f'[kafka]\nsasl_password = ["{SENTINEL}"]\n', "kafka.sasl_password = ***"),
        (f'[registry]\nsigning_key = {{ k = "{SENTINEL}" }}\n', "registry.signing_key"),
    ],
)
def test_toml_errors_name_the_key_but_never_show_the_secret(
    tmp_path: Path, text: str, named: str
) -> None:
    # Given a TOML file with a misspelt or mistyped secret
    cfg = write(tmp_path, text)
    # When it is loaded, checked on its own, and checked by the CLI
    with pytest.raises(ConfigError) as loaded:
        load_settings(cfg, environ={})
    result = CliRunner().invoke(app, ["config", "check", str(cfg)])
    shown = CliRunner().invoke(app, ["config", "show", "--config", str(cfg)])
    # Then every message names the key and none holds the secret
    assert named in str(loaded.value)
    assert result.exit_code == 2 and named.split(":")[0].split(" ")[0] in result.output
    for output in (str(loaded.value), result.output, shown.output):
        assert SENTINEL not in output


def test_env_unknown_key_error_never_shows_the_secret(monkeypatch) -> None:
    # Given a misspelt secret in the environment
    monkeypatch.setenv("DETECTOR_KAFKA__SASL_PASSWD", SENTINEL)
    # When settings are loaded (library and CLI)
    with pytest.raises(ConfigError) as err:
        load_settings()
    result = CliRunner().invoke(app, ["config", "show"])
    # Then the key is named and the value is not
    assert "kafka.sasl_passwd: unknown key" in str(err.value)
    assert result.exit_code == 2 and "sasl_passwd" in result.output
    assert SENTINEL not in str(err.value) and SENTINEL not in result.output


def test_unparsable_section_variable_is_a_config_error_without_its_value(monkeypatch) -> None:
    # Given a whole section set as one environment variable that is not JSON
    monkeypatch.setenv("DETECTOR_REGISTRY", '{"signing_key": "' + SENTINEL)
    # When settings are loaded / Then a ConfigError names the field, not the value
    with pytest.raises(ConfigError) as err:
        load_settings()
    result = CliRunner().invoke(app, ["config", "show"])
    assert 'field "registry"' in str(err.value)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert SENTINEL not in str(err.value) and SENTINEL not in result.output


def test_config_show_masks_secrets_from_file_and_env(tmp_path: Path, monkeypatch) -> None:
    # Given one secret in a file and one in the environment
    cfg = write(
        tmp_path,
        f'[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\nsasl_password = "{SENTINEL}"\n',
    )
    monkeypatch.setenv("DETECTOR_REGISTRY__SIGNING_KEY", SENTINEL + "-env")
    # When the effective configuration is shown
    result = CliRunner().invoke(app, ["config", "show", "--config", str(cfg)])
    # Then both keys are there, masked (config show is TOML: secrets are comments)
    assert result.exit_code == 0
    assert "# sasl_password = (secret: set, not shown)  # file " in result.output
    assert (
        "# signing_key = (secret: set, not shown)  # env DETECTOR_REGISTRY__SIGNING_KEY"
        in result.output
    )
    assert SENTINEL not in result.output


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_failing_to_connect_never_logs_the_password(tmp_path: Path, small_bundle) -> None:
    # Given a model and SASL settings whose password is the sentinel, and no broker
    ModelRegistry(RegistrySettings(path=tmp_path / "models")).publish(small_bundle)
    port = _closed_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DETECTOR_REGISTRY__PATH": str(tmp_path / "models"),
        "DETECTOR_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "DETECTOR_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DETECTOR_KAFKA__SASL_MECHANISM": "PLAIN",
        "DETECTOR_KAFKA__SASL_USERNAME": "detector",
        "DETECTOR_KAFKA__SASL_PASSWORD": SENTINEL,
        "DETECTOR_KAFKA__BOOTSTRAP_TIMEOUT_MS": "500",
        "DETECTOR_SERVICE__METRICS_PORT": "0",
        "DETECTOR_SERVICE__LOG_LEVEL": "DEBUG",
    }
    # When `detector run` tries to connect for a few seconds, logging at DEBUG
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector", "run"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    # Then it did try (and said so), and the password appears nowhere
    assert f"127.0.0.1:{port}" in output
    assert SENTINEL not in output
