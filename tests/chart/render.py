"""Rendering the chart with Helm's own Go engine (helm-python-sdk), offline."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "passito-jobs"
RELEASE = "rel"
NAMESPACE = "passito"
SCENARIOS = {"default": {}} | {
    path.name.removesuffix("-values.yaml"): yaml.safe_load(path.read_text())
    for path in sorted((CHART / "ci").glob("*-values.yaml"))
}


@functools.cache
def _render_cached(chart: str, values_json: str, release: str, namespace: str, install: bool) -> str:
    with helm_python.Chart.load(chart) as loaded:
        out = loaded.render(json.loads(values_json), name=release, namespace=namespace, is_install=install)
    return json.dumps(out)


def render_files(
    values: dict[str, Any] | None = None,
    *,
    chart: Path = CHART,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    install: bool = True,
) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included)."""
    text = _render_cached(str(chart), json.dumps(values or {}, sort_keys=True), release, namespace, install)
    result: dict[str, str] = json.loads(text)
    return result


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (hooks and the test pod included, NOTES.txt not)."""
    objects = []
    for path, text in render_files(values, **kwargs).items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(values: dict[str, Any] | None = None, **kwargs: Any) -> str:
    return next(text for path, text in render_files(values, **kwargs).items() if path.endswith("NOTES.txt"))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str) -> dict[str, Any]:
    matches = [obj for obj in by_kind(objects, kind) if obj["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, (
        f"expected one {kind} *{name_suffix}, got {[m['metadata']['name'] for m in matches]}"
    )
    return matches[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(object description, pod spec) of every workload, CronJob and bare Pod."""
    for obj in objects:
        kind, spec = obj["kind"], obj.get("spec", {})
        where = f"{kind}/{obj['metadata']['name']}"
        if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield where, spec["template"]["spec"]
        elif kind == "CronJob":
            yield where, spec["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield where, spec


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}
