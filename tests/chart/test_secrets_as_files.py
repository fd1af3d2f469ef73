"""Secrets reach the pods as read-only files, never as environment variables; only the operator
mounts a service-account token; every checkov exception is a per-resource annotation with a
reason, listed in docs/kubernetes.md. Checked on every ci/ scenario."""

from __future__ import annotations

import base64
import re
from pathlib import PurePosixPath
from typing import Any

import helm_python
import pytest

from tests.chart.render import ROOT, SCENARIOS, by_kind, containers, env_of, one, pod_specs, render

scenarios = pytest.mark.parametrize("scenario", sorted(SCENARIOS))

READ_ONLY_FOR_OWNER = 0o400


def _secret_values(objects: list[dict[str, Any]], values: dict[str, Any]) -> set[str]:
    """Every secret the render knows: the chart's Secrets' data and the secret values given."""
    found = {
        base64.b64decode(encoded).decode()
        for secret in by_kind(objects, "Secret")
        for encoded in (secret.get("data") or {}).values()
    }
    found |= {
        value for key, value in (values.get("secrets") or {}).items() if value and key != "existingSecret"
    }
    # A Secret's name or a short key is not a secret; a value of 12 characters or more is.
    return {value for value in found if len(value) >= 12}


@scenarios
def test_no_secret_reaches_an_environment_variable(scenario: str) -> None:
    """Not as a value, not through secretKeyRef or envFrom, in no container of any workload,
    init container, hook, CronJob or test pod."""
    values = SCENARIOS[scenario]
    objects = render(values)
    secrets = _secret_values(objects, values)
    pods = list(pod_specs(objects))
    assert pods
    for where, pod in pods:
        for container in containers(pod):
            name = f"{where} container {container['name']}"
            assert not [e for e in container.get("envFrom", []) if "secretRef" in e], name
            for item in container.get("env", []):
                assert "secretKeyRef" not in item.get("valueFrom", {}), f"{name}: {item['name']}"
                assert not [s for s in secrets if s in str(item.get("value", ""))], f"{name}: {item['name']}"
            command_line = " ".join(map(str, container.get("command", []) + container.get("args", [])))
            assert not [s for s in secrets if s in command_line], name


def _volume_files(pod: dict[str, Any], volume_name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A volume and its files: path -> "<secret>/<key>" (projected or secret volumes)."""
    volume = next(v for v in pod["volumes"] if v["name"] == volume_name)
    files: dict[str, str] = {}
    for source in volume.get("projected", {}).get("sources", []):
        for item in source["secret"]["items"]:
            files[item["path"]] = f"{source['secret']['name']}/{item['key']}"
    if "secret" in volume:
        for item in volume["secret"]["items"]:
            files[item["path"]] = f"{volume['secret']['secretName']}/{item['key']}"
    return volume, files


@scenarios
def test_every_secret_file_is_a_read_only_projection(scenario: str) -> None:
    """Each *_FILE variable names a file that the container mounts read-only, from a Secret
    projected with mode 0400, or (the CloudNativePG pooler's URL) from an in-memory volume that
    the pod's database-url init container writes."""
    checked = 0
    for where, pod in pod_specs(render(SCENARIOS[scenario])):
        for container in containers(pod):
            for name, item in env_of(container).items():
                if not name.endswith("_FILE"):
                    continue
                # PASSITO_WEB_TOKENS_FILE names several files, comma-separated: each is checked.
                for value in item["value"].split(","):
                    checked += _check_secret_file(pod, where, container, name, PurePosixPath(value))
    assert checked, "no *_FILE variable rendered"


def _check_secret_file(
    pod: dict[str, Any], where: str, container: dict[str, Any], name: str, path: PurePosixPath
) -> int:
    init_names = [c["name"] for c in pod.get("initContainers", [])]
    where_exactly = f"{where} container {container['name']}: {name}={path}"
    mount = next(
        (m for m in container.get("volumeMounts", []) if path.is_relative_to(m["mountPath"])),
        None,
    )
    assert mount is not None, f"{where_exactly} is not mounted"
    assert mount.get("readOnly") is True, where_exactly
    volume, files = _volume_files(pod, mount["name"])
    relative = str(path.relative_to(mount["mountPath"]))
    if "emptyDir" in volume:
        assert volume["emptyDir"].get("medium") == "Memory", where_exactly
        assert "database-url" in init_names, where_exactly
        builder = next(c for c in pod["initContainers"] if c["name"] == "database-url")
        assert builder["args"][2] == str(path), where_exactly
    else:
        assert relative in files, f"{where_exactly}: the volume holds {sorted(files)}"
        mode = volume.get("projected", volume.get("secret", {})).get("defaultMode")
        assert mode == READ_ONLY_FOR_OWNER, f"{where_exactly}: mode {mode!r}"
    return 1


@scenarios
def test_the_pods_user_can_read_its_secret_files(scenario: str) -> None:
    """Mode 0400 files belong to root; the kubelet gives them the pod's fsGroup (and group
    read), which is how a non-root user reads them. Every pod with secret files has one."""
    for where, pod in pod_specs(render(SCENARIOS[scenario])):
        secret_volumes = [
            v for v in pod.get("volumes", []) if "secret" in v or "secret" in str(v.get("projected", ""))
        ]
        if secret_volumes:
            context = pod["securityContext"]
            assert context.get("fsGroup"), where
            assert context.get("runAsNonRoot") is True, where


def test_the_chart_refuses_a_pod_security_context_without_fs_group() -> None:
    with pytest.raises(helm_python.HelmError, match=r"podSecurityContext.fsGroup must be set"):
        render({"secrets": {"databaseUrl": "postgresql://h/db"}, "podSecurityContext": {"fsGroup": None}})


def test_workers_read_the_signing_key_and_smtp_password_from_files() -> None:
    objects = render(SCENARIOS["everything-enabled"])
    pod = one(objects, "Deployment", "-worker")["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    _, files = _volume_files(pod, "secrets")
    secret = one(objects, "Secret", "rel-passito-jobs")["metadata"]["name"]
    for variable, key in (
        ("PASSITO_SECRET_KEY_FILE", "PASSITO_SECRET_KEY"),
        ("PASSITO_SMTP_PASSWORD_FILE", "PASSITO_SMTP_PASSWORD"),
        ("PASSITO_DATABASE_URL_FILE", "PASSITO_DATABASE_URL"),
    ):
        path = PurePosixPath(env[variable]["value"])
        assert files[path.name] == f"{secret}/{key}"
    assert "PASSITO_SECRET_KEY" not in env
    assert "PASSITO_SMTP_PASSWORD" not in env


def test_the_bundled_postgresql_reads_its_password_from_a_file() -> None:
    statefulset = one(render({"postgresql": {"mode": "bundled"}}), "StatefulSet", "-postgresql")
    pod = statefulset["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert "POSTGRES_PASSWORD" not in env
    path = PurePosixPath(env["POSTGRES_PASSWORD_FILE"]["value"])
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if path.is_relative_to(m["mountPath"]))
    _, files = _volume_files(pod, mount["name"])
    assert files[path.name] == f"{statefulset['metadata']['name']}/POSTGRES_PASSWORD"
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 999


@scenarios
def test_only_the_operator_mounts_a_service_account_token(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    for where, pod in pod_specs(objects):
        expected = "Deployment/" in where and where.endswith("-operator")
        assert pod.get("automountServiceAccountToken") is expected, where
    for account in by_kind(objects, "ServiceAccount"):
        # The operator's pod asks for its token itself; no account hands one out by default.
        assert account.get("automountServiceAccountToken") is False, account["metadata"]["name"]


def test_the_operator_has_a_readiness_probe_on_a_declared_port() -> None:
    container = one(render(), "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "liveness"}, probe
    assert ports["liveness"] == int(env_of(container)["PASSITO_OPERATOR_LIVENESS_PORT"]["value"])


def _checkov_skips(objects: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(check id, "Kind/name") -> reason, from checkov.io/skip* annotations."""
    skips = {}
    for obj in objects:
        for key, text in (obj["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                check, _, reason = text.partition("=")
                skips[(check, f"{obj['kind']}/{obj['metadata']['name'].removeprefix('rel-')}")] = reason
    return skips


@scenarios
def test_checkov_exceptions_carry_a_reason_and_are_documented(scenario: str) -> None:
    documented = (ROOT / "docs" / "kubernetes.md").read_text()
    for (check, resource), reason in _checkov_skips(render(SCENARIOS[scenario])).items():
        assert re.fullmatch(r"CKV2?_K8S_\d+", check), check
        assert len(reason.split()) >= 8, f"{resource} skips {check} without a reason"
        kind, _, name = resource.partition("/")
        assert re.search(
            rf"`{check}`.*{kind} `<release>-{name.removeprefix('passito-jobs-')}`", documented
        ), f"docs/kubernetes.md does not list the {check} exception of {resource}"
