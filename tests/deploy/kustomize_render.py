"""A small stand-in for `kustomize build`, for the subset deploy/k8s uses.

kustomize itself is a Go binary that pip cannot install; the tests use it when it is on the
PATH (and check this renderer against it), and this otherwise. Supported: ``resources``
(files and directories), ``components``, ``patches`` (strategic merge, files naming their
target by kind and metadata.name), ``namespace``, ``images``, ``replicas`` and ``labels``
(``pairs`` on metadata.labels). Anything else in a kustomization is refused, so a field
added to deploy/k8s that this does not understand fails the test instead of being ignored.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]
_KNOWN = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "patches",
    "namespace",
    "images",
    "replicas",
    "labels",
}
_MERGE_KEYS = ("name", "mountPath", "containerPort")


class RenderError(Exception):
    pass


def load_docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def build(directory: Path) -> list[Doc]:
    """The resources of a kustomization directory, patched and transformed."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - _KNOWN
    if unknown:
        raise RenderError(f"{directory}/kustomization.yaml: fields not supported here: {unknown}")
    docs: list[Doc] = []
    for entry in kust.get("resources", []):
        path = (directory / entry).resolve()
        docs.extend(build(path) if path.is_dir() else load_docs(path))
    for entry in kust.get("components", []):
        docs = _component(docs, (directory / entry).resolve())
    for patch in kust.get("patches", []):
        for p in load_docs(directory / patch["path"]):
            _patch(docs, p)
    for entry in kust.get("labels", []):
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    if "namespace" in kust:
        for doc in docs:
            doc["metadata"]["namespace"] = kust["namespace"]
    for image in kust.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    for rep in kust.get("replicas", []):
        for doc in docs:
            if doc["metadata"]["name"] == rep["name"] and "replicas" in doc.get("spec", {}):
                doc["spec"]["replicas"] = rep["count"]
    return docs


def _component(docs: list[Doc], directory: Path) -> list[Doc]:
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if kust.get("kind") != "Component":
        raise RenderError(f"{directory}: a component needs kind: Component")
    docs = docs + [d for e in kust.get("resources", []) for d in load_docs(directory / e)]
    for patch in kust.get("patches", []):
        for p in load_docs(directory / patch["path"]):
            _patch(docs, p)
    return docs


def _patch(docs: list[Doc], patch: Doc) -> None:
    targets = [
        d
        for d in docs
        if d["kind"] == patch["kind"] and d["metadata"]["name"] == patch["metadata"]["name"]
    ]
    if len(targets) != 1:
        raise RenderError(
            f"patch for {patch['kind']}/{patch['metadata']['name']} matches {len(targets)} resources"
        )
    merged = merge(targets[0], patch)
    targets[0].clear()
    targets[0].update(merged)


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize applies it to these kinds: maps merge, lists of named
    items merge by name (containers, volumes, env, mounts, ports), other lists are replaced.
    """
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        key = next(
            (k for k in _MERGE_KEYS if all(isinstance(i, dict) and k in i for i in base + patch)),
            None,
        )
        if key is None:
            return copy.deepcopy(patch)
        out = copy.deepcopy(base)
        added = []
        for item in patch:
            same = [i for i, b in enumerate(out) if b[key] == item[key]]
            if same:
                out[same[0]] = merge(out[same[0]], item)
            else:
                added.append(copy.deepcopy(item))
        return added + out  # kustomize puts items only the patch has first
    return copy.deepcopy(patch)


def pod_spec(doc: Doc) -> Doc | None:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return spec["template"]["spec"]
    if doc["kind"] == "Pod":
        return spec
    return None


def _containers(doc: Doc) -> list[Doc]:
    pod = pod_spec(doc)
    if pod is None:
        return []
    return [*pod.get("initContainers", []), *pod.get("containers", [])]
