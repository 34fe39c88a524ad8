"""Settings: precedence, clear errors naming the key, secrets, the documented defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from detector.cli.main import app
from detector.errors import ConfigError
from detector.settings import check_config_file, describe_sources, load_settings
from detector.settings_doc import render_default_toml, render_markdown_reference

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_precedence_arguments_over_env_over_file_over_defaults(tmp_path: Path, monkeypatch) -> None:
    cfg = write(
        tmp_path,
        '[registry]\npath = "from-file"\n[kafka]\ninput_topic = "file-topic"\ngroup_id = "file-group"\n',
    )
    env = {"DETECTOR_KAFKA__INPUT_TOPIC": "env-topic", "DETECTOR_REGISTRY__PATH": "from-env"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings(cfg, {"registry": {"path": "from-arg"}}, environ=env)
    assert str(s.registry.path) == "from-arg"
    assert s.kafka.input_topic == "env-topic"
    assert s.kafka.group_id == "file-group"
    assert s.kafka.alerts_topic == "alerts"
    sources = {
        k: origin
        for k, _, origin in describe_sources(
            s, cfg, {"registry": {"path": "from-arg"}}, environ=env
        )
    }
    assert sources["registry.path"] == "argument"
    assert sources["kafka.input_topic"] == "env DETECTOR_KAFKA__INPUT_TOPIC"
    assert sources["kafka.group_id"].startswith("file ")
    assert sources["kafka.alerts_topic"] == "default"


def test_env_alone_configures_everything(monkeypatch) -> None:
    monkeypatch.setenv("DETECTOR_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("DETECTOR_KAFKA__INPUT_TOPIC", "events")
    monkeypatch.setenv(
        "DETECTOR_TRAINING__SEVERITY_PERCENTILES", '{"warning": 2.0, "critical": 0.5}'
    )
    s = load_settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.training.severity_percentiles == {"warning": 2.0, "critical": 0.5}


def test_config_file_from_detector_config_env(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[model]\nn_components_max = 4\n")
    assert load_settings(environ={"DETECTOR_CONFIG": str(cfg)}).model.n_components_max == 4


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[training]\ncalibration_fraction = 1.5\n", "training.calibration_fraction = 1.5"),
        ("[model]\nn_compnents_max = 3\n", "model.n_compnents_max: unknown key"),
        ("[modle]\nx = 1\n", "modle: unknown key"),
        ('[kafka]\nauto_offset_reset = "middle"\n', "kafka.auto_offset_reset = 'middle'"),
        (
            "[model]\nn_components_min = 5\nn_components_max = 2\n",
            "n_components_min (5) must be <=",
        ),
        (
            "[training]\nseverity_percentiles = { warning = 60.0 }\n",
            "severity_percentiles.warning = 60.0",
        ),
        # the old name, which only ever acted at training, says where it went
        (
            "[thresholds]\nlevels = { warning = 2.0 }\n",
            "thresholds.levels moved to training.severity_percentiles",
        ),
        ('[kafka]\nsecurity_protocol = "SASL_SSL"\n', "needs kafka.sasl_mechanism"),
    ],
)
def test_bad_values_fail_naming_the_key_and_value(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={})
    assert named in str(err.value)


def test_bad_env_value_names_the_key(monkeypatch) -> None:
    monkeypatch.setenv("DETECTOR_MODEL__N_COMPONENTS_MAX", "abc")
    with pytest.raises(ConfigError, match=r"model.n_components_max = 'abc'"):
        load_settings()


def load_settings_from_env(env: dict[str, str]):
    import os

    old = dict(os.environ)
    os.environ.update(env)
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_missing_and_unparsable_files_name_themselves(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[model\n"), environ={})


def test_secrets_are_never_printed(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "PLAIN"\nsasl_password = "hunter2"\n[registry]\nsigning_key = "topsecret"\n',
    )
    s = load_settings(cfg, environ={})
    assert (
        s.kafka.sasl_password is not None and s.kafka.sasl_password.get_secret_value() == "hunter2"
    )
    shown = " ".join(v for _, v, _ in describe_sources(s, cfg, environ={}))
    assert "hunter2" not in shown and "topsecret" not in shown
    result = CliRunner().invoke(app, ["config", "show", "--config", str(cfg)])
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "topsecret" not in result.output
    bad = write(tmp_path, "[kafka]\nsasl_password = 5\n")
    with pytest.raises(ConfigError) as err:
        load_settings(bad, environ={})
    assert "sasl_password = ***" in str(err.value)


def test_documented_defaults_equal_the_code_and_examples_load() -> None:
    assert (ROOT / "config" / "detector.toml").read_text() == render_default_toml()
    check_config_file(ROOT / "config" / "detector.toml")
    for example in (ROOT / "config" / "examples").glob("*.toml"):
        check_config_file(example)


def test_configuration_doc_documents_every_key_as_the_code_defines_it() -> None:
    readme = (ROOT / "docs" / "configuration.md").read_text()
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    section = readme[readme.index(start) + len(start) : readme.index(end)]
    assert section.strip() == render_markdown_reference().strip(), (
        "run: python -m detector.settings_doc --readme"
    )


# -- property-based -----------------------------------------------------------------------
@hsettings(max_examples=60, deadline=None)
@given(
    cal=st.floats(min_value=0.05, max_value=0.5, allow_nan=False),
    k=st.integers(min_value=1, max_value=50),
    topic=st.text(
        alphabet=st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=30
    ),
    policy=st.sampled_from(["marginalize", "impute", "reject"]),
)
def test_valid_values_round_trip_through_env_and_toml(
    cal: float, k: int, topic: str, policy: str
) -> None:
    env = {
        "DETECTOR_TRAINING__CALIBRATION_FRACTION": repr(cal),
        "DETECTOR_MODEL__N_COMPONENTS_MAX": str(k),
        "DETECTOR_KAFKA__INPUT_TOPIC": topic,
        "DETECTOR_FEATURES__MISSING_POLICY": policy,
    }
    s = load_settings_from_env(env)
    assert (
        s.training.calibration_fraction,
        s.model.n_components_max,
        s.kafka.input_topic,
        s.features.missing_policy,
    ) == (cal, k, topic, policy)
    t = check_config_file_text(
        f'[training]\ncalibration_fraction = {cal!r}\n[model]\nn_components_max = {k}\n[features]\nmissing_policy = "{policy}"\n'
    )
    assert (
        t.training.calibration_fraction,
        t.model.n_components_max,
        t.features.missing_policy,
    ) == (cal, k, policy)


def check_config_file_text(text: str):
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(text)
    return check_config_file(fh.name)


@hsettings(max_examples=60, deadline=None)
@given(
    key=st.sampled_from(
        [
            "training.calibration_fraction",
            "model.n_components_max",
            "kafka.max_poll_records",
            "drift.sample_rate",
        ]
    ),
    value=st.one_of(
        st.floats(min_value=1e6, max_value=1e9),
        st.floats(max_value=-1.0, min_value=-1e9),
        st.text(alphabet="xyz", min_size=1, max_size=5),
    ),
)
def test_invalid_values_raise_config_error_naming_the_key(key: str, value) -> None:
    section, name = key.split(".")
    literal = f'"{value}"' if isinstance(value, str) else repr(value)
    with pytest.raises(ConfigError) as err:
        check_config_file_text(f"[{section}]\n{name} = {literal}\n")
    assert key in str(err.value)


def test_metrics_bind_loopback_unless_the_image_opens_them() -> None:
    # Given the defaults, and the environment the container image and the k8s pod set
    default = load_settings(environ={})
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    pod = (ROOT / "deploy" / "k8s" / "base" / "deployment.yaml").read_text()
    # When the image's variable is applied the way the container applies it
    import os

    os.environ["DETECTOR_SERVICE__METRICS_HOST"] = "0.0.0.0"
    try:
        in_image = load_settings()
    finally:
        del os.environ["DETECTOR_SERVICE__METRICS_HOST"]
    # Then the server binds loopback by default and every interface in the image and the pod
    assert default.service.metrics_host == "127.0.0.1"
    assert in_image.service.metrics_host == "0.0.0.0"
    assert "DETECTOR_SERVICE__METRICS_HOST=0.0.0.0" in dockerfile
    assert '{ name: DETECTOR_SERVICE__METRICS_HOST, value: "0.0.0.0" }' in pod
