"""The Helm chart, rendered by Helm's own Go engine (helm-python-sdk) and checked against the
official Kubernetes schemas (kubernetes-validate, offline) of the oldest and newest supported
Kubernetes versions. No cluster runs here; what a cluster would check at admission is checked
against the same schemas. The Prometheus Operator's custom resources (PodMonitor, ServiceMonitor,
PrometheusRule, AlertmanagerConfig) have no schema available offline: their structure and the
label selectors they depend on are asserted instead. The CloudNativePG and KEDA objects are
checked against schemas written from their documentation (test_database_and_keda.py).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from passito_jobs.config import describe
from tests.chart.render import (
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    SCENARIOS,
    by_kind,
    containers,
    env_of,
    notes,
    one,
    pod_specs,
    render,
)

OLDEST_KUBERNETES = "1.27"  # Chart.yaml's kubeVersion
NEWEST_KUBERNETES = kubernetes_validate.utils.latest_version()
MONITORING_KINDS = {"PodMonitor", "ServiceMonitor", "PrometheusRule", "AlertmanagerConfig"}
CNPG_KINDS = {"Cluster", "Pooler"}
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
CUSTOM_KINDS = {"WorkerAutoscaler"} | MONITORING_KINDS | CNPG_KINDS | KEDA_KINDS
CRD_FILE = CHART / "crds" / "workerautoscaler.yaml"
ALERTS_FILE = CHART / "files" / "alerts.yaml"

scenarios = pytest.mark.parametrize("scenario", sorted(SCENARIOS))


def _secret_value(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


# ---------------------------------------------------------------- lint and render


@scenarios
def test_lint_strict_reports_no_warning_or_error(scenario: str) -> None:
    report = helm_python.lint(CHART, SCENARIOS[scenario], strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"] == ">=1.27.0-0"


@scenarios
@pytest.mark.parametrize("kube_version", [OLDEST_KUBERNETES, NEWEST_KUBERNETES])
def test_every_object_validates_against_the_kubernetes_schema(scenario: str, kube_version: str) -> None:
    objects = render(SCENARIOS[scenario])
    assert objects, "nothing rendered"
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {where}: {exc.message}")
    assert {obj["kind"] for obj in objects} - CUSTOM_KINDS, "only custom objects rendered"


def test_monitoring_objects_are_off_by_default() -> None:
    kinds = {obj["kind"] for obj in render()}
    assert not kinds & MONITORING_KINDS
    assert not any(obj["metadata"].get("labels", {}).get("grafana_dashboard") for obj in render())


def test_everything_enabled_renders_every_optional_object() -> None:
    kinds = {obj["kind"] for obj in render(SCENARIOS["everything-enabled"])}
    expected = {"StatefulSet", "NetworkPolicy", "PodMonitor", "ServiceMonitor", "AlertmanagerConfig"}
    if ALERTS_FILE.exists():
        expected.add("PrometheusRule")
    assert expected <= kinds


# ---------------------------------------------------------------- custom objects against their CRD


def _crd_schema() -> dict[str, Any]:
    if not CRD_FILE.exists():
        pytest.skip("charts/passito-jobs/crds/workerautoscaler.yaml has not landed yet (issue 4)")
    crd = yaml.safe_load(CRD_FILE.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["storage"])
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


@scenarios
def test_workerautoscaler_validates_against_the_crd_schema(scenario: str) -> None:
    objects = by_kind(render(SCENARIOS[scenario]), "WorkerAutoscaler")
    autoscaling = SCENARIOS[scenario].get("autoscaling", {})
    if not autoscaling.get("enabled", True) or autoscaling.get("engine", "operator") != "operator":
        assert objects == []
        return
    schema = _crd_schema()
    (autoscaler,) = objects
    assert autoscaler["apiVersion"] == "jobs.passito.io/v1"
    # openAPIV3Schema is OpenAPI 3.0, whose keywords (boolean exclusiveMinimum) are draft 4's.
    jsonschema.Draft4Validator(schema).validate(autoscaler)
    worker = one(render(SCENARIOS[scenario]), "Deployment", "-worker")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]


def test_crd_schema_rejects_what_the_chart_must_never_render() -> None:
    """The jsonschema check above can fail: a wrong type in the spec is caught."""
    schema = _crd_schema()
    autoscaler = by_kind(render(), "WorkerAutoscaler")[0]
    autoscaler["spec"]["maxReplicas"] = "ten"
    with pytest.raises(jsonschema.ValidationError, match="'ten' is not of type 'integer'"):
        jsonschema.Draft4Validator(schema).validate(autoscaler)


def test_pause_annotations_come_from_values() -> None:
    autoscaler = by_kind(render({"autoscaling": {"paused": True, "pausedReplicas": 0}}), "WorkerAutoscaler")[
        0
    ]
    assert autoscaler["metadata"]["annotations"] == {
        "jobs.passito.io/paused": "true",
        "jobs.passito.io/paused-replicas": "0",
    }
    assert "annotations" not in by_kind(render(), "WorkerAutoscaler")[0]["metadata"]


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"worker": {"replicas": "three"}}, r"/worker/replicas.*got string, want integer"),
        ({"wokrer": {}}, r"additional properties 'wokrer' not allowed"),
        ({"worker": {"concurency": 5}}, r"additional properties 'concurency' not allowed"),
        ({"logging": {"level": "LOUD"}}, r"/logging/level.*must be one of"),
        ({"autoscaling": {"minReplicas": -1}}, r"/autoscaling/minReplicas.*minimum"),
        ({"image": {"pullPolicy": "Sometimes"}}, r"/image/pullPolicy"),
        ({"cleanup": {"schedule": "daily"}}, r"/cleanup/schedule"),
        (
            {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            r"autoscaling.minReplicas \(5\) must not exceed autoscaling.maxReplicas \(2\)",
        ),
        (
            {"autoscaling": {"scaleUpThreshold": 1, "scaleDownThreshold": 3}},
            r"scaleDownThreshold \(3\) must not exceed autoscaling.scaleUpThreshold \(1\)",
        ),
        ({"secrets": {"secretKey": "short"}}, r"secrets.secretKey must be at least 32 characters"),
        ({"email": {"smtp": {"user": "u", "security": "none"}}}, r"email.smtp.user needs"),
        ({"secrets": {"databaseUrl": "mysql://x"}}, r"/secrets/databaseUrl"),
        ({"otel": {"enabled": True}}, r"/otel/endpoint"),
        ({"otel": {"endpoint": "http://user:token@collector:4318"}}, r"/otel/endpoint"),
        ({"otel": {"sampler": "sometimes"}}, r"/otel/sampler.*must be one of"),
        ({"otel": {"headers": "authorization=Bearer x"}}, r"additional properties 'headers' not allowed"),
        ({"otel": {"resourceAttributes": {"team": "a,b=c"}}}, r"/otel/resourceAttributes/team"),
    ],
)
def test_bad_values_are_rejected_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render(values)


# ---------------------------------------------------------------- security


@scenarios
def test_every_pod_is_locked_down(scenario: str) -> None:
    pods = list(pod_specs(render(SCENARIOS[scenario])))
    assert pods
    for where, pod in pods:
        context = pod.get("securityContext", {})
        assert context.get("runAsNonRoot") is True, where
        assert context.get("runAsUser", 0) != 0, where
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for container in containers(pod):
            name = f"{where} container {container['name']}"
            security = container.get("securityContext", {})
            assert security.get("readOnlyRootFilesystem") is True, name
            assert security.get("allowPrivilegeEscalation") is False, name
            assert security.get("privileged", False) is False, name
            assert security.get("capabilities", {}).get("drop") == ["ALL"], name
            assert not security.get("capabilities", {}).get("add"), name
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container.get("resources", {}).get(part, {})), name
        # Only the operator talks to the Kubernetes API.
        if "-operator" not in where:
            assert pod.get("automountServiceAccountToken") is False, where


@scenarios
def test_no_secret_value_in_plain_environment_variables(scenario: str) -> None:
    for where, pod in pod_specs(render(SCENARIOS[scenario])):
        for container in containers(pod):
            env = env_of(container)
            for name in (
                "PASSITO_DATABASE_URL",
                "PASSITO_SECRET_KEY",
                "PASSITO_SMTP_PASSWORD",
                "POSTGRES_PASSWORD",
            ):
                if name in env:
                    assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{where}: {name}"


def test_only_workers_get_the_signing_key_and_smtp_password() -> None:
    """Secrets come as files now (test_secrets_as_files.py): the workers alone are told where the
    signing key and SMTP password are, and only their pods mount those keys."""
    values = SCENARIOS["everything-enabled"]
    for where, pod in pod_specs(render(values)):
        mounted_keys = {
            item["key"]
            for volume in pod.get("volumes", [])
            for source in volume.get("projected", {}).get("sources", [])
            for item in source.get("secret", {}).get("items", [])
        }
        for container in containers(pod):
            env = env_of(container)
            has_secrets = {"PASSITO_SECRET_KEY_FILE", "PASSITO_SMTP_PASSWORD_FILE"} & set(env)
            if container["name"] == "worker":
                assert has_secrets == {"PASSITO_SECRET_KEY_FILE", "PASSITO_SMTP_PASSWORD_FILE"}
            else:
                assert not has_secrets, f"{where} container {container['name']}"
        if "-worker" in where:
            assert {"PASSITO_SECRET_KEY", "PASSITO_SMTP_PASSWORD"} <= mounted_keys, where
        else:
            assert not {"PASSITO_SECRET_KEY", "PASSITO_SMTP_PASSWORD"} & mounted_keys, where


# ---------------------------------------------------------------- RBAC


@scenarios
def test_rbac_is_least_privilege(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    if not by_kind(objects, "WorkerAutoscaler"):
        # Without the operator (KEDA, or no autoscaling) nothing in the release uses the API.
        rbac = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
        assert not [obj for obj in objects if obj["kind"] in rbac]
        assert not [name for name, _ in pod_specs(objects) if "-operator" in name]
        return
    operator_account = one(objects, "ServiceAccount", "-operator")["metadata"]["name"]

    for cluster_role in by_kind(objects, "ClusterRole"):
        assert cluster_role["rules"] == [
            {
                "apiGroups": ["apiextensions.k8s.io"],
                "resources": ["customresourcedefinitions"],
                "verbs": ["list", "watch"],
            }
        ], "the only cluster-wide permission is watching CRDs"
    for role in by_kind(objects, "Role"):
        assert role["metadata"]["namespace"] == NAMESPACE
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
            assert not {"secrets", "pods", "pods/exec", "roles", "rolebindings"} & set(rule["resources"])
            assert not {"create", "delete", "update", "deletecollection"} & set(rule["verbs"]) or rule[
                "resources"
            ] == ["events"], rule
    rules = {
        (tuple(rule["apiGroups"]), tuple(rule["resources"])): rule
        for role in by_kind(objects, "Role")
        for rule in role["rules"]
    }
    deployments = rules[(("apps",), ("deployments",))]
    assert deployments["verbs"] == ["get", "patch"]
    assert deployments["resourceNames"] == [one(objects, "Deployment", "-worker")["metadata"]["name"]]
    assert rules[(("jobs.passito.io",), ("workerautoscalers/status",))]["verbs"] == ["patch"]
    assert rules[(("jobs.passito.io",), ("workerautoscalers",))]["verbs"] == ["list", "watch", "patch"]
    assert rules[(("", "events.k8s.io"), ("events",))]["verbs"] == ["create"]

    for binding in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": operator_account, "namespace": NAMESPACE}
        ]
    operator = one(objects, "Deployment", "-operator")
    assert operator["spec"]["template"]["spec"]["serviceAccountName"] == operator_account
    assert env_of(operator["spec"]["template"]["spec"]["containers"][0])["PASSITO_OPERATOR_NAMESPACES"] == {
        "name": "PASSITO_OPERATOR_NAMESPACES",
        "value": NAMESPACE,
    }


def test_rbac_comments_say_why() -> None:
    """Each rule of the operator's Role and ClusterRole is preceded by a comment."""
    for name in ("role.yaml", "clusterrole.yaml"):
        lines = (CHART / "templates" / "operator" / name).read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip().startswith("- apiGroups:"):
                assert lines[index - 1].strip().startswith("#"), f"{name}:{index + 1} has no comment"


def test_watching_crds_can_be_turned_off() -> None:
    objects = render({"operator": {"rbac": {"watchCustomResourceDefinitions": False}}})
    assert not by_kind(objects, "ClusterRole")
    assert not by_kind(objects, "ClusterRoleBinding")


# ---------------------------------------------------------------- labels and names


@scenarios
def test_labels_follow_the_kubernetes_recommendations(scenario: str) -> None:
    objects = render(SCENARIOS[scenario])
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/name") == "passito-jobs", where
        assert labels.get("app.kubernetes.io/instance") == RELEASE, where
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", where
        assert labels.get("app.kubernetes.io/version"), where
        assert labels.get("helm.sh/chart", "").startswith("passito-jobs-"), where
        assert len(obj["metadata"]["name"]) <= 63, where
    for obj in by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet"):
        selector = obj["spec"]["selector"]["matchLabels"]
        pod_labels = obj["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert "app.kubernetes.io/component" in selector, "components must not select each other's pods"
    for service in by_kind(objects, "Service"):
        matching = [
            d
            for d in by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet")
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, service["metadata"]["name"]


def test_long_release_names_are_truncated_to_63_characters() -> None:
    release = "a-very-long-release-name-that-goes-on-and-on-and-on-for-ever"
    for obj in render({"postgresql": {"enabled": True}}, release=release):
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
        assert not obj["metadata"]["name"].endswith("-")


def test_monitoring_selectors_match_the_pods_and_ports() -> None:
    """Each PodMonitor/ServiceMonitor selects exactly its component's pods or Service, scrapes a
    port they have, and names the scrape job as files/alerts.yaml expects."""
    objects = render(SCENARIOS["everything-enabled"])
    monitors = by_kind(objects, "PodMonitor")
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {
        "worker",
        "operator",
    }
    for monitor in monitors:
        component = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        selected = [
            d
            for d in by_kind(objects, "Deployment")
            if monitor["spec"]["selector"]["matchLabels"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert [d["metadata"]["name"] for d in selected] == [f"{RELEASE}-passito-jobs-{component}"]
        endpoint = monitor["spec"]["podMetricsEndpoints"][0]
        ports = {p["name"] for p in selected[0]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert endpoint["port"] in ports
        assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": f"passito-jobs-{component}"}]
    (service_monitor,) = by_kind(objects, "ServiceMonitor")
    service = one(objects, "Service", "-exporter")
    assert service_monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    endpoint = service_monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": "passito-jobs-health"}]
    for obj in objects:
        if obj["kind"] in MONITORING_KINDS:
            assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    if ALERTS_FILE.exists():
        text = ALERTS_FILE.read_text()
        for job in re.findall(r'job="([^"]+)"', text):
            assert job in {"passito-jobs-worker", "passito-jobs-operator", "passito-jobs-health"}, job


# ---------------------------------------------------------------- settings and behaviour


# Settings that issue 15's code side adds to config.py after the chart: PASSITO_LISTEN, and the
# <NAME>_FILE variant of every secret setting. Delete this set once they are in config.py.
PENDING_SETTINGS = {"PASSITO_LISTEN"}


@scenarios
def test_environment_variables_are_settings_of_config_py(scenario: str) -> None:
    """One name per concept: every PASSITO_* variable the chart sets is a documented setting."""
    known = {row["env"] for row in describe()} | PENDING_SETTINGS
    used = {
        name
        for _, pod in pod_specs(render(SCENARIOS[scenario]))
        for container in containers(pod)
        for name in env_of(container)
        if name.startswith("PASSITO_")
    }
    assert used
    unknown = used - known
    assert unknown == set(), "the chart sets variables config.py does not read"


def test_otel_values_become_the_workers_otel_variables() -> None:
    def otel_env(values: dict[str, Any]) -> dict[str, Any]:
        (worker,) = [
            c for _, pod in pod_specs(render(values)) for c in containers(pod) if c["name"] == "worker"
        ]
        return {name: var.get("value") for name, var in env_of(worker).items() if name.startswith("OTEL_")}

    assert otel_env({}) == {}
    assert otel_env(SCENARIOS["everything-enabled"]) == {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "passito-jobs-worker",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=passito,deployment.environment=staging",
    }
    # Only the workers trace: no other container gets an OTEL_* variable.
    for where, pod in pod_specs(render(SCENARIOS["everything-enabled"])):
        for container in containers(pod):
            if container["name"] != "worker":
                assert not [n for n in env_of(container) if n.startswith("OTEL_")], where


def test_worker_grace_period_outlasts_the_shutdown_timeout() -> None:
    # Durations as every surface writes them; bare seconds (deprecated) still work.
    for given, timeout in [(0, 0), (30, 30), (600, 600), ("45s", 45), ("2m", 120), ("1h", 3600)]:
        worker = one(render({"worker": {"shutdownTimeout": given}}), "Deployment", "-worker")
        pod = worker["spec"]["template"]["spec"]
        env = env_of(pod["containers"][0])
        assert env["PASSITO_SHUTDOWN_TIMEOUT"]["value"] == f"{timeout}s"
        assert pod["terminationGracePeriodSeconds"] == timeout + 15
    with pytest.raises(helm_python.HelmError, match="shutdownTimeout"):
        render({"worker": {"shutdownTimeout": "2h"}})


def test_workers_load_passito_and_your_job_modules() -> None:
    worker = one(render(), "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"] == ["worker", "--import", "passito_jobs.outpass"]
    values = {"worker": {"jobModules": ["passito_jobs.outpass", "myapp.jobs"]}}
    worker = one(render(values), "Deployment", "-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["args"] == ["worker", "--import", "passito_jobs.outpass", "--import", "myapp.jobs"]
    with pytest.raises(helm_python.HelmError, match="jobModules"):
        render({"worker": {"jobModules": ["bad module; rm -rf /"]}})


def test_worker_schedules_become_the_workers_schedules_file(tmp_path: Path) -> None:
    from passito_jobs.worker.scheduler import read_schedules_file

    assert not [c for c in by_kind(render(), "ConfigMap") if c["metadata"]["name"].endswith("-schedules")]
    objects = render(SCENARIOS["everything-enabled"])
    (config_map,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-schedules")]
    path = tmp_path / "schedules.yaml"
    path.write_text(config_map["data"]["schedules.yaml"])
    read = {s.name: s for s in read_schedules_file(path)}
    assert read["nightly-report"].when == "0 6 * * * (Europe/Berlin)"
    assert read["nightly-report"].catch_up == "none"
    assert (read["heartbeat"].every, read["heartbeat"].queue) == (30.0, "maintenance")
    assert read["heartbeat"].payload == {"source": "chart"}
    pod = one(objects, "Deployment", "-worker")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert env["PASSITO_SCHEDULES_FILE"] == mounts["schedules"]["mountPath"] + "/schedules.yaml"
    assert mounts["schedules"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["schedules"]["configMap"]["name"] == config_map["metadata"]["name"]
    for bad in ({"name": "x", "type": "Noop"}, {"name": "x", "type": "Noop", "every": "0.5 s"}):
        with pytest.raises(helm_python.HelmError, match="schedules"):
            render({"worker": {"schedules": [bad]}})


def test_the_health_cronjob_rescues_and_still_reads_the_old_key() -> None:
    def args(values: dict[str, Any]) -> list[str]:
        (cron,) = [c for c in by_kind(render(values), "CronJob") if c["metadata"]["name"].endswith("-health")]
        found: list[str] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        return found

    assert "--rescue" in args({})
    assert "--rescue" not in args({"health": {"cronjob": {"rescue": False}}})
    assert "--rescue" not in args({"health": {"cronjob": {"recover": False}}})  # deprecated name
    assert "--rescue" in args({"health": {"cronjob": {"rescue": False, "recover": True}}})


def test_worker_probes_and_storage() -> None:
    objects = render()
    pod = one(objects, "Deployment", "-worker")["spec"]["template"]["spec"]
    worker = pod["containers"][0]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in worker["ports"]
    assert env_of(worker)["PASSITO_METRICS_PORT"]["value"] == "9100"
    storage_dir = env_of(worker)["PASSITO_STORAGE_DIR"]["value"]
    mount = next(m for m in worker["volumeMounts"] if m["mountPath"] == storage_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = one(objects, "PersistentVolumeClaim", "-storage")
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    existing = render({"worker": {"storage": {"existingClaim": "mine"}}})
    assert not by_kind(existing, "PersistentVolumeClaim")
    pod = one(existing, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert {"name": "storage", "persistentVolumeClaim": {"claimName": "mine"}} in pod["volumes"]


def test_autoscaling_leaves_the_replicas_to_the_operator() -> None:
    assert "replicas" not in one(render(), "Deployment", "-worker")["spec"]
    manual = one(
        render({"autoscaling": {"enabled": False}, "worker": {"replicas": 4}}), "Deployment", "-worker"
    )
    assert manual["spec"]["replicas"] == 4
    operator = one(render(), "Deployment", "-operator")["spec"]
    assert operator["replicas"] == 1
    assert operator["strategy"] == {"type": "Recreate"}


def test_scale_to_zero_scenario() -> None:
    objects = render(SCENARIOS["scale-to-zero"])
    autoscaler = by_kind(objects, "WorkerAutoscaler")[0]["spec"]
    assert autoscaler["minReplicas"] == 0
    assert autoscaler["fallback"] == {"replicas": 2, "failureThreshold": 3}
    assert not by_kind(objects, "PodDisruptionBudget")


def test_cronjobs() -> None:
    objects = render()
    health = one(objects, "CronJob", "-health")["spec"]
    assert health["schedule"] == "*/5 * * * *"
    assert health["concurrencyPolicy"] == "Forbid"
    assert health["successfulJobsHistoryLimit"] >= 1
    assert health["failedJobsHistoryLimit"] >= 1
    assert health["jobTemplate"]["spec"]["ttlSecondsAfterFinished"] > 0
    args = health["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["health", "--exit-code-on-failure"]
    assert "--rescue" in args
    cleanup = one(objects, "CronJob", "-cleanup")["spec"]
    assert cleanup["schedule"] == "0 2 * * *"
    assert cleanup["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "cleanup-expired-files"
    ]
    for cronjob in (health, cleanup):
        image = cronjob["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "ghcr.io/passito/passito-jobs-health:0.1.0"


def test_images_per_component() -> None:
    objects = render({"image": {"registry": "", "tag": "dev"}})
    images = {
        container["name"]: container["image"]
        for _, pod in pod_specs(objects)
        for container in containers(pod)
    }
    assert images["worker"] == "passito-jobs-worker:dev"
    assert images["operator"] == "passito-jobs-supervisor:dev"
    for name in ("exporter", "health", "cleanup", "migrate", "dispatch-noop"):
        assert images[name] == "passito-jobs-health:dev", name


def test_migration_hook_runs_before_install_only_when_the_database_secret_exists() -> None:
    existing = render(SCENARIOS["existing-secrets"])
    job = one(existing, "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert all("initContainers" not in pod for _, pod in pod_specs(existing))
    # Otherwise the chart creates the Secret (or the database) with the release: the hook runs
    # after install, and the long-running pods migrate (or wait) in an init container.
    managed = render(SCENARIOS["minimal-external-db"])
    job = one(managed, "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"
    for suffix in ("-worker", "-operator", "-exporter"):
        pod = one(managed, "Deployment", suffix)["spec"]["template"]["spec"]
        assert [c["args"] for c in pod["initContainers"]] == [["migrate"]], suffix


def test_chart_secret_carries_the_values_and_a_generated_key() -> None:
    objects = render(SCENARIOS["minimal-external-db"])
    secret = one(objects, "Secret", RELEASE + "-passito-jobs")
    assert (
        _secret_value(secret, "PASSITO_DATABASE_URL")
        == SCENARIOS["minimal-external-db"]["secrets"]["databaseUrl"]
    )
    generated = _secret_value(
        one(render({"secrets": {"databaseUrl": "postgresql://h/db"}}), "Secret", "-passito-jobs"),
        "PASSITO_SECRET_KEY",
    )
    assert len(generated) >= 32
    assert not by_kind(render(SCENARIOS["existing-secrets"]), "Secret")


def test_dev_postgresql_shares_its_password_with_the_database_url() -> None:
    objects = render({"postgresql": {"enabled": True}})
    password = _secret_value(one(objects, "Secret", "-postgresql"), "POSTGRES_PASSWORD")
    url = _secret_value(one(objects, "Secret", RELEASE + "-passito-jobs"), "PASSITO_DATABASE_URL")
    service = one(objects, "Service", "-postgresql")["metadata"]["name"]
    assert url == f"postgresql://passito:{password}@{service}:5432/passito"
    assert len(password) >= 24


def test_notes_say_when_no_database_is_configured() -> None:
    assert "NO DATABASE IS CONFIGURED" in notes()
    for scenario in ("minimal-external-db", "existing-secrets", "everything-enabled"):
        assert "NO DATABASE IS CONFIGURED" not in notes(SCENARIOS[scenario])


def test_helm_test_pod_dispatches_noop_and_waits() -> None:
    pod = one(render(), "Pod", "-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert 'passito-jobs dispatch Noop --queue "$QUEUE"' in script
    assert "completed) " in script
    assert "exit 1" in script
    assert pod["spec"]["restartPolicy"] == "Never"


def test_values_yaml_comments_every_key() -> None:
    """Each chart value has a comment above it (Kubernetes objects passed through as they are,
    like securityContext or resources, are commented as a whole)."""
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, dict[str, Any] | None]] = [(-1, schema)]
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        node = (parent.get("properties") or {}).get(key) if parent else None
        # Below `resources` are Kubernetes' own fields (requests, limits), commented as a whole.
        stack.append((indent, None if key == "resources" else node))
        if node is None:  # inside a passed-through Kubernetes object
            continue
        above = lines[index - 1].strip()
        assert above.startswith("#") or line.rstrip().endswith(":"), f"values.yaml:{index + 1} {line.strip()}"


def test_schema_describes_every_value() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        assert node.get("description"), f"{path} has no description in values.schema.json"
        if isinstance(value, dict) and node.get("properties") is not None:
            assert node.get("additionalProperties") is False, path
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is missing from values.schema.json"
                walk(child, node["properties"][key], f"{path}.{key}")

    assert schema["additionalProperties"] is False
    for key, value in values.items():
        walk(value, schema["properties"][key], key)


# ---------------------------------------------------------------- alert rules, dashboards


def _chart_with_alerts(tmp_path: Path, alerts: dict[str, Any]) -> Path:
    chart = tmp_path / "passito-jobs"
    shutil.copytree(CHART, chart)
    (chart / "files").mkdir(exist_ok=True)
    (chart / "files" / "alerts.yaml").write_text(yaml.safe_dump(alerts))
    return chart


SAMPLE_ALERTS = {
    "groups": [
        {
            "name": "passito-jobs",
            "rules": [
                {"record": "passito_jobs:ready:sum", "expr": "sum(passito_jobs_queue_jobs)"},
                {
                    "alert": "PassitoJobsStuck",
                    "expr": "passito_jobs_queue_stuck_jobs > 0",
                    "for": "5m",
                    "labels": {"severity": "warning"},
                    "annotations": {"summary": "stuck"},
                },
                {
                    "alert": "PassitoJobsWorkersDown",
                    "expr": "absent(up{job='worker'})",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "down", "runbook_url": "https://example.org/down"},
                },
            ],
        }
    ]
}


def test_prometheus_rule_overrides_from_values(tmp_path: Path) -> None:
    """A stand-in alerts file (the chart's own is checked below): disable, re-severity, `for`."""
    chart = _chart_with_alerts(tmp_path, SAMPLE_ALERTS)
    values = {
        "monitoring": {
            "prometheusRule": {
                "enabled": True,
                "rules": {
                    "PassitoJobsWorkersDown": {"enabled": False},
                    "PassitoJobsStuck": {"severity": "critical", "for": "15m"},
                },
            }
        }
    }
    (rule,) = by_kind(render(values, chart=chart), "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    assert group["name"] == "passito-jobs"
    alerts = {r.get("alert", r.get("record")): r for r in group["rules"]}
    assert set(alerts) == {"passito_jobs:ready:sum", "PassitoJobsStuck"}
    assert alerts["PassitoJobsStuck"]["labels"]["severity"] == "critical"
    assert alerts["PassitoJobsStuck"]["for"] == "15m"
    assert alerts["PassitoJobsStuck"]["annotations"]["runbook_url"].endswith(
        "/docs/runbooks/PassitoJobsStuck.md"  # as the file is named
    )
    kept = by_kind(
        render({"monitoring": {"prometheusRule": {"enabled": True}}}, chart=chart), "PrometheusRule"
    )
    rules = {r.get("alert"): r for r in kept[0]["spec"]["groups"][0]["rules"]}
    assert rules["PassitoJobsWorkersDown"]["annotations"]["runbook_url"] == "https://example.org/down"
    assert rules["PassitoJobsStuck"]["labels"]["severity"] == "warning"
    bad = {"monitoring": {"prometheusRule": {"enabled": True, "rules": {"NoSuchAlert": {"enabled": False}}}}}
    with pytest.raises(
        helm_python.HelmError, match=r"rules.NoSuchAlert: no alert of that name.*PassitoJobsStuck"
    ):
        render(bad, chart=chart)
    with pytest.raises(helm_python.HelmError, match=r"severity.*must be one of"):
        render(
            {
                "monitoring": {
                    "prometheusRule": {"enabled": True, "rules": {"PassitoJobsStuck": {"severity": "page"}}}
                }
            },
            chart=chart,
        )


def test_the_charts_alert_rules_become_a_prometheus_rule() -> None:
    if not ALERTS_FILE.exists():
        pytest.skip("charts/passito-jobs/files/alerts.yaml has not landed yet (issue 5)")
    source = yaml.safe_load(ALERTS_FILE.read_text())
    names = [r["alert"] for g in source["groups"] for r in g["rules"] if "alert" in r]
    assert names
    values = {"monitoring": {"prometheusRule": {"enabled": True, "rules": {names[0]: {"enabled": False}}}}}
    (rule,) = by_kind(render(values), "PrometheusRule")
    rendered = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert rendered == names[1:]
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if "alert" in r:
                assert r["labels"]["severity"] in {"critical", "warning", "info"}
                assert r["annotations"]["runbook_url"]


def test_every_runbook_link_of_the_shipped_alerts_resolves_to_a_runbook() -> None:
    base = "https://github.com/passito/passito-jobs/blob/main/docs/runbooks/"
    (rule,) = by_kind(render({"monitoring": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")
    links = [
        r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r
    ]
    assert links
    for link in links:
        assert link.startswith(base), link
        assert (ROOT / "docs" / "runbooks" / link.removeprefix(base)).is_file(), link
    own = "https://wiki.example.org/passito/runbooks/"
    values = {"monitoring": {"prometheusRule": {"enabled": True, "runbookBaseUrl": own}}}
    (rule,) = by_kind(render(values), "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if "alert" in r:
                assert r["annotations"]["runbook_url"] == f"{own}{r['alert']}.md"


def test_grafana_dashboard_configmap() -> None:
    dashboards = sorted((CHART / "files" / "dashboards").glob("*.json"))
    if not dashboards:
        pytest.skip("charts/passito-jobs/files/dashboards/ has not landed yet (issue 5)")
    (config_map,) = [
        obj
        for obj in render({"monitoring": {"grafanaDashboard": {"enabled": True}}})
        if obj["kind"] == "ConfigMap" and obj["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]
    assert set(config_map["data"]) == {path.name for path in dashboards}
    for path in dashboards:
        assert yaml.safe_load(config_map["data"][path.name]) == yaml.safe_load(path.read_text())


def test_alertmanager_config_renders_the_email_templates(tmp_path: Path) -> None:
    """The inlined templates render with Alertmanager's own engine (amtool, Debian's
    prometheus-alertmanager): the Subject is one line, the HTML a whole document."""
    if not sorted((CHART / "files" / "alertmanager").glob("*.tmpl")):
        pytest.skip("charts/passito-jobs/files/alertmanager/ has not landed yet (issue 5)")
    if not shutil.which("amtool"):
        if os.environ.get("CI") == "true":
            pytest.fail("amtool is missing (apt-get install prometheus-alertmanager)")
        pytest.skip("amtool is not installed")
    (config,) = by_kind(render(SCENARIOS["everything-enabled"]), "AlertmanagerConfig")
    email = config["spec"]["receivers"][0]["emailConfigs"][0]
    empty = tmp_path / "empty.tmpl"
    empty.write_text('{{ define "unused" }}{{ end }}')
    data = tmp_path / "data.json"
    data.write_text(
        '{"receiver": "admin-email", "status": "firing", "alerts": [{"status": "firing", '
        '"labels": {"alertname": "PassitoJobsStale", "severity": "warning", "queue": "emails"}, '
        '"annotations": {"summary": "Jobs wait too long"}, "startsAt": "2025-03-01T09:00:00Z", '
        '"endsAt": "0001-01-01T00:00:00Z"}], "groupLabels": {"alertname": "PassitoJobsStale"}, '
        '"commonLabels": {"alertname": "PassitoJobsStale", "severity": "warning"}, '
        '"commonAnnotations": {}, "externalURL": "http://alertmanager"}'
    )

    def amtool(text: str, kind: str) -> str:
        result = subprocess.run(
            [
                "amtool",
                "template",
                "render",
                f"--template.glob={empty}",
                f"--template.text={text}",
                f"--template.type={kind}",
                f"--template.data={data}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    subject = amtool(email["headers"][0]["value"], "text").rstrip("\n")
    assert subject.startswith("[passito-jobs] FIRING:1 PassitoJobsStale (warning)")
    assert "\n" not in subject
    html = amtool(email["html"], "html")
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert "PassitoJobsStale" in html
    assert "PassitoJobsStale" in amtool(email["text"], "text")


def test_alertmanager_config_mirrors_the_plain_alertmanager_configuration() -> None:
    """The AlertmanagerConfig (Prometheus Operator) and files/alertmanager/alertmanager.yml (an
    Alertmanager run without the operator) route and inhibit the same way."""
    plain = yaml.safe_load((CHART / "files" / "alertmanager" / "alertmanager.yml").read_text())
    (config,) = by_kind(render(SCENARIOS["everything-enabled"]), "AlertmanagerConfig")
    route = config["spec"]["route"]

    def matchers(items: list[dict[str, str]]) -> list[str]:
        return [f'{m["name"]}{m["matchType"]}"{m["value"]}"' for m in items]

    assert route["groupBy"] == plain["route"]["group_by"]
    assert (route["groupWait"], route["groupInterval"]) == (
        plain["route"]["group_wait"],
        plain["route"]["group_interval"],
    )
    assert route["repeatInterval"] == plain["route"]["repeat_interval"]
    assert [(matchers(r["matchers"]), r["groupWait"], r["repeatInterval"]) for r in route["routes"]] == [
        (r["matchers"], r["group_wait"], r["repeat_interval"]) for r in plain["route"]["routes"]
    ]
    assert [
        (matchers(rule["sourceMatch"]), matchers(rule["targetMatch"]))
        for rule in config["spec"]["inhibitRules"]
    ] == [(rule["source_matchers"], rule["target_matchers"]) for rule in plain["inhibit_rules"]]


@scenarios
def test_no_field_renders_empty(scenario: str) -> None:
    """An empty `annotations:` or `env:` renders as null: valid for the API server, but a sign of
    a template block that should not have been emitted."""

    def nulls(value: Any, path: str) -> list[str]:
        if value is None:
            return [path]
        if isinstance(value, dict):
            return [p for key, item in value.items() for p in nulls(item, f"{path}.{key}")]
        if isinstance(value, list):
            return [p for index, item in enumerate(value) for p in nulls(item, f"{path}[{index}]")]
        return []

    found = [
        p
        for obj in render(SCENARIOS[scenario])
        for p in nulls(obj, f"{obj['kind']}/{obj['metadata']['name']}")
    ]
    assert found == []
