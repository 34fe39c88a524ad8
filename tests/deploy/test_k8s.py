"""deploy/k8s: rendered like `kustomize build`, validated against the Kubernetes schemas,
and held to what the deploy README promises (non-root, read-only root, fsGroup, probes,
limits, every Secret/ConfigMap/volume reference resolvable)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from detector.settings import Settings
from tests.deploy.kustomize_render import build, load_docs, pod_spec
from tests.deploy.tools import K8S, find_tool, report_missing

# The oldest Kubernetes still commonly run, and the newest the schemas know.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
KUSTOMIZATIONS = (K8S / "base", K8S / "overlays" / "example")
STANDALONE = (K8S / "secrets.example.yaml", *sorted((K8S / "jobs").glob("*.yaml")))


def rendered(directory: Path) -> list[dict[str, Any]]:
    return build(directory)


def secrets_offered() -> dict[str, set[str]]:
    return {
        d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
        for d in load_docs(K8S / "secrets.example.yaml")
    }


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_renderer_matches_kustomize_where_it_is_installed(directory: Path) -> None:
    kustomize = find_tool("kustomize")
    if kustomize is None:
        report_missing(
            "kustomize build",
            "no kustomize binary (go install sigs.k8s.io/kustomize/kustomize/v5@v5.4.3); "
            "the manifests are still rendered by tests/deploy/kustomize_render.py",
        )
        pytest.skip("kustomize not installed; rendered by the test's own renderer instead")
    # Given the real kustomize's output for the same directory
    out = subprocess.run(
        [kustomize, "build", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    theirs = sorted(
        (d for d in yaml.safe_load_all(out) if d), key=lambda d: (d["kind"], d["metadata"]["name"])
    )
    # When the test's renderer builds it too
    ours = sorted(rendered(directory), key=lambda d: (d["kind"], d["metadata"]["name"]))
    # Then both give the same resources, field for field
    assert [(d["kind"], d["metadata"]["name"]) for d in ours] == [
        (d["kind"], d["metadata"]["name"]) for d in theirs
    ]
    for a, b in zip(ours, theirs, strict=True):
        assert a == b, f"{a['kind']}/{a['metadata']['name']} differs from kustomize's"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_rendered_manifests_validate_against_the_kubernetes_schemas(
    directory: Path, version: str
) -> None:
    # Given the rendered kustomization; When each resource is validated strictly
    docs = rendered(directory)
    # Then every one is valid (unknown fields included) for this Kubernetes version
    kinds = {d["kind"] for d in docs}
    assert kinds >= {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "CronJob"}
    # (models travel on the registry topic by default: no ReadWriteMany claim is needed)
    assert "PersistentVolumeClaim" not in kinds
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", STANDALONE, ids=lambda p: p.name)
def test_standalone_manifests_validate(path: Path, version: str) -> None:
    docs = load_docs(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_default_registry_is_the_topic_mirrored_into_a_writable_empty_dir() -> None:
    # Given the example overlay as rendered
    docs = {(d["kind"], d["metadata"]["name"]): d for d in rendered(K8S / "overlays" / "example")}
    toml = tomllib.loads(docs[("ConfigMap", "detector-config")]["data"]["detector.toml"])
    # Then the registry is the topic, and every replica's /models is its own writable emptyDir
    assert toml["registry"]["backend"] == "kafka"
    pod = pod_spec(docs[("Deployment", "detector")])
    assert pod is not None
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    assert "emptyDir" in models and "persistentVolumeClaim" not in models
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "models")
    assert mount["mountPath"] == "/models" and mount.get("readOnly") is False


def test_the_directory_registry_component_still_renders_with_its_claim(tmp_path: Path) -> None:
    # Given the base's resources with the registry-directory component instead of Kafka's
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": base["apiVersion"],
                "kind": "Kustomization",
                "resources": [str(K8S / "base" / r) for r in base["resources"]],
                "components": [str(K8S / "components" / "registry-directory")],
            }
        )
    )
    # When it is rendered
    docs = {(d["kind"], d["metadata"]["name"]): d for d in build(tmp_path)}
    # Then every resource is valid, the claim is ReadWriteMany, and the pods use it with
    # the backend set back to "directory"
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    claim = docs[("PersistentVolumeClaim", "detector-models")]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for kind, name in (("Deployment", "detector"), ("CronJob", "detector-retrain")):
        pod = pod_spec(docs[(kind, name)])
        assert pod is not None
        models = next(v for v in pod["volumes"] if v["name"] == "models")
        assert models["persistentVolumeClaim"]["claimName"] == "detector-models"
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["DETECTOR_REGISTRY__BACKEND"] == "directory", (kind, env)


def test_a_bad_manifest_is_refused_by_the_validator() -> None:
    # The check can fail: a typo in a field of the Deployment is an error
    deployment = next(d for d in rendered(K8S / "base") if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def _workloads() -> list[tuple[str, dict[str, Any]]]:
    docs = rendered(K8S / "overlays" / "example") + [
        d for p in STANDALONE for d in load_docs(p) if d["kind"] != "Secret"
    ]
    return [(f"{d['kind']}/{d['metadata']['name']}", d) for d in docs if pod_spec(d) is not None]


@pytest.mark.parametrize("name,doc", _workloads(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_pod_runs_non_root_read_only_with_limits(name: str, doc: dict[str, Any]) -> None:
    pod = pod_spec(doc)
    assert pod is not None
    sc = pod["securityContext"]
    assert sc["runAsNonRoot"] is True, name
    for c in pod["containers"]:
        csc = c["securityContext"]
        assert csc["readOnlyRootFilesystem"] is True, (name, c["name"])
        assert csc["allowPrivilegeEscalation"] is False, (name, c["name"])
        assert csc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
        assert "cpu" in c["resources"]["requests"] and "memory" in c["resources"]["limits"]
        mounted = {m["name"] for m in c.get("volumeMounts", [])}
        declared = {v["name"] for v in pod.get("volumes", [])}
        assert mounted <= declared, f"{name}: mounts without a volume: {mounted - declared}"
        if c["image"].split(":")[0].endswith("detector"):
            # The detector image writes only /tmp and the registry: /tmp must be a volume.
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, name
            assert sc["fsGroup"] == sc["runAsUser"] == 10001, name


def test_references_resolve_to_documented_secrets_configmaps_and_claims() -> None:
    docs = rendered(K8S / "overlays" / "example")
    configmaps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    secrets = secrets_offered()
    seen_secrets = set()
    for name, doc in _workloads():
        pod = pod_spec(doc)
        assert pod is not None
        for v in pod.get("volumes", []):
            if "configMap" in v:
                assert v["configMap"]["name"] in configmaps, name
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, name
            if "secret" in v:
                assert v["secret"]["secretName"] in secrets, name
                seen_secrets.add(v["secret"]["secretName"])
        for c in pod["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), (name, ref)
                    seen_secrets.add(ref["name"])
    # Every Secret template is used by something, and the README tells how to create each.
    assert seen_secrets == set(secrets)
    readme = (K8S.parent / "README.md").read_text()
    for secret in secrets:
        assert f"create secret generic {secret}" in readme, secret


def test_pdb_service_and_probes_select_the_detector_pods() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in rendered(K8S / "base")}
    deployment = docs[("Deployment", "detector")]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    pdb = docs[("PodDisruptionBudget", "detector")]
    service = docs[("Service", "detector-metrics")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    port = container["ports"][0]["containerPort"]
    toml = tomllib.loads(docs[("ConfigMap", "detector-config")]["data"]["detector.toml"])
    assert toml["service"]["metrics_port"] == port
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DETECTOR_SERVICE__METRICS_PORT"] == str(port)
    # The grace period outlasts the service's own shutdown grace (finish, flush, commit).
    grace = Settings.model_validate(toml).service.shutdown_grace_s
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
