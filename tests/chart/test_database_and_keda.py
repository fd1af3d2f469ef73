"""postgresql.mode (bundled, external, cloudnativepg), pgbouncer and autoscaling.engine (operator,
keda, none): what each renders, and the CloudNativePG and KEDA objects checked against schemas
written from their documentation (tests/chart/schemas/; no CRD of theirs is available offline).
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.chart.render import (
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    by_kind,
    containers,
    env_of,
    notes,
    one,
    pod_specs,
    render,
)

SCHEMAS = Path(__file__).parent / "schemas"
SCHEMA_FILES = {
    "Cluster": "cloudnativepg-cluster.json",
    "Pooler": "cloudnativepg-pooler.json",
    "ScaledObject": "keda-scaledobject.json",
    "TriggerAuthentication": "keda-triggerauthentication.json",
}
# The parameters KEDA's postgresql scaler reads from a TriggerAuthentication.
POSTGRESQL_AUTH_PARAMETERS = {"connection", "password", "host", "port", "userName", "dbName", "sslmode"}
EXTERNAL = {"secrets": {"databaseUrl": "postgresql://passito:pw@db.example.org:5432/passito"}}
CNPG = {"postgresql": {"mode": "cloudnativepg"}}
CLUSTER = f"{RELEASE}-passito-jobs-postgresql"

scenarios = pytest.mark.parametrize("scenario", sorted(SCENARIOS))


@cache
def _validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / SCHEMA_FILES[kind]).read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _database_files(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Pod -> "<secret>/<key>" its database-url file comes from ("built" by the init container)."""
    sources = {}
    for where, pod in pod_specs(objects):
        found = "built" if [c for c in pod.get("initContainers", []) if c["name"] == "database-url"] else ""
        for volume in pod.get("volumes", []):
            for source in volume.get("projected", {}).get("sources", []):
                for item in source.get("secret", {}).get("items", []):
                    if item["path"] == "database-url":
                        found = f"{source['secret']['name']}/{item['key']}"
        if where.startswith("StatefulSet/"):
            continue  # the bundled PostgreSQL itself
        sources[where] = found
    return sources


def _all_env(objects: list[dict[str, Any]]) -> list[dict[str, dict[str, Any]]]:
    return [
        env_of(container)
        for where, pod in pod_specs(objects)
        if not where.startswith("StatefulSet/")
        for container in containers(pod)
        if container["name"] != "database-url"
    ]


# ---------------------------------------------------------------- documented fields


@scenarios
def test_cloudnativepg_and_keda_objects_have_only_documented_fields(scenario: str) -> None:
    for obj in render(SCENARIOS[scenario]):
        if obj["kind"] not in SCHEMA_FILES:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        errors = [
            f"{'.'.join(map(str, e.path))}: {e.message}" for e in _validator(obj["kind"]).iter_errors(obj)
        ]
        assert errors == [], where
        assert obj["metadata"]["namespace"] == NAMESPACE, where
        if obj["kind"] == "Pooler":
            # The pod template is a core PodSpec that CloudNativePG merges into its own.
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pgbouncer"}}
            kubernetes_validate.validate(pod | {"spec": obj["spec"]["template"]["spec"]}, "1.27", strict=True)
        if obj["kind"] == "TriggerAuthentication":
            parameters = {ref["parameter"] for ref in obj["spec"]["secretTargetRef"]}
            assert parameters <= POSTGRESQL_AUTH_PARAMETERS, where


@pytest.mark.parametrize(
    ("kind", "values", "change", "message"),
    [
        ("Cluster", CNPG, lambda s: s.update(instance=3), r"'instance' was unexpected"),
        ("Cluster", CNPG, lambda s: s.pop("instances"), r"'instances' is a required property"),
        (
            "Cluster",
            CNPG,
            lambda s: s["postgresql"]["synchronous"].update(method="all"),
            r"'all' is not one of",
        ),
        (
            "Pooler",
            CNPG | {"pgbouncer": {"enabled": True}},
            lambda s: s["pgbouncer"].update(poolMode="statement"),
            r"'statement' is not one of",
        ),
        (
            "ScaledObject",
            EXTERNAL | {"autoscaling": {"engine": "keda"}},
            lambda s: s["triggers"][0]["metadata"].update(targetQueryValue=5),
            r"5 is not of type 'string'",
        ),
        (
            "ScaledObject",
            EXTERNAL | {"autoscaling": {"engine": "keda"}},
            lambda s: s["triggers"][0]["metadata"].update(queryText="SELECT 1"),
            r"'queryText' was unexpected",
        ),
        (
            "TriggerAuthentication",
            EXTERNAL | {"autoscaling": {"engine": "keda"}},
            lambda s: s["secretTargetRef"][0].pop("key"),
            r"'key' is a required property",
        ),
    ],
)
def test_the_documented_schemas_reject_a_wrong_field(
    kind: str, values: dict[str, Any], change: Any, message: str
) -> None:
    (obj,) = by_kind(render(values), kind)
    _validator(kind).validate(obj)
    change(obj["spec"])
    with pytest.raises(jsonschema.ValidationError, match=message):
        _validator(kind).validate(obj)


# ---------------------------------------------------------------- postgresql.mode


def test_external_is_the_default_mode() -> None:
    objects = render(EXTERNAL)
    assert not by_kind(objects, "StatefulSet")
    assert not by_kind(objects, "Cluster")
    secret = one(objects, "Secret", f"{RELEASE}-passito-jobs")["metadata"]["name"]
    assert set(_database_files(objects).values()) == {f"{secret}/PASSITO_DATABASE_URL"}


def test_external_mode_reads_the_url_from_a_secret_of_its_own() -> None:
    values = {"postgresql": {"external": {"existingSecret": "shared-pg-app", "existingSecretKey": "uri"}}}
    objects = render(values)
    assert set(_database_files(objects).values()) == {"shared-pg-app/uri"}
    assert "NO DATABASE IS CONFIGURED" not in notes(values)


def test_cloudnativepg_mode_renders_a_cluster_with_failover_and_uses_its_secret() -> None:
    objects = render(CNPG)
    (cluster,) = by_kind(objects, "Cluster")
    spec = cluster["spec"]
    assert cluster["metadata"]["name"] == CLUSTER
    assert spec["instances"] == 3
    assert spec["postgresql"]["synchronous"] == {"method": "any", "number": 1}
    assert spec["bootstrap"]["initdb"] == {"database": "passito", "owner": "passito"}
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    assert spec["primaryUpdateMethod"] == "switchover"
    assert not by_kind(objects, "StatefulSet")
    # The operator-generated application secret, key uri: the -rw service, always the primary.
    assert set(_database_files(objects).values()) == {f"{CLUSTER}-app/uri"}
    assert "PASSITO_DATABASE_URL" not in (one(objects, "Secret", f"{RELEASE}-passito-jobs").get("data") or {})
    assert "CloudNativePG Cluster" in notes(CNPG)
    asynchronous = by_kind(
        render({"postgresql": {"mode": "cloudnativepg", "cloudnativepg": {"synchronousReplicas": 0}}}),
        "Cluster",
    )
    assert "postgresql" not in asynchronous[0]["spec"]


def test_cloudnativepg_names_fit_long_release_names() -> None:
    release = "a-very-long-release-name-that-goes-on-and-on-and-on-for-ever"
    (cluster,) = by_kind(render(CNPG | {"pgbouncer": {"enabled": True}}, release=release), "Cluster")
    name = cluster["metadata"]["name"]
    # Its pods (-10), services (-rw) and secrets (-app, -superuser) append to the name.
    assert len(name) <= 50
    assert not name.endswith("-")


def test_the_deprecated_postgresql_enabled_means_bundled() -> None:
    values = {"postgresql": {"enabled": True}}
    objects = render(values)
    assert one(objects, "StatefulSet", "-postgresql")
    assert "DEPRECATED: postgresql.enabled is read as postgresql.mode bundled" in notes(values)
    assert "DEPRECATED" not in notes({"postgresql": {"mode": "bundled"}})
    assert not by_kind(render({"postgresql": {"enabled": False}} | EXTERNAL), "StatefulSet")
    with pytest.raises(
        helm_python.HelmError, match=r"postgresql.enabled \(deprecated\) means postgresql.mode bundled"
    ):
        render({"postgresql": {"enabled": True, "mode": "cloudnativepg"}})


@pytest.mark.parametrize(
    ("values", "hook", "init"),
    [
        (SCENARIOS["cloudnativepg"], "post-install,pre-upgrade", True),
        (SCENARIOS["external-pgbouncer"], "post-install,pre-upgrade", True),
        (SCENARIOS["existing-database-secret"], "pre-install,pre-upgrade", False),
        (
            {"postgresql": {"mode": "bundled"}, "secrets": {"existingSecret": "mine"}},
            "post-install,pre-upgrade",
            True,
        ),
    ],
)
def test_the_migration_runs_before_install_only_when_every_secret_it_reads_exists(
    values: dict[str, Any], hook: str, init: bool
) -> None:
    objects = render(values)
    assert one(objects, "Job", "-migrate")["metadata"]["annotations"]["helm.sh/hook"] == hook
    worker = one(objects, "Deployment", "-worker")["spec"]["template"]["spec"]
    assert ("migrate" in [c["name"] for c in worker.get("initContainers", [])]) is init


# ---------------------------------------------------------------- pgbouncer


def test_pgbouncer_points_every_workload_at_the_pooler_and_turns_listen_off() -> None:
    values = SCENARIOS["external-pgbouncer"]
    objects = render(values)
    secret = one(objects, "Secret", f"{RELEASE}-passito-jobs")
    assert base64.b64decode(secret["data"]["POOLER_DATABASE_URL"]).decode() == values["secrets"]["poolerUrl"]
    assert set(_database_files(objects).values()) == {f"{secret['metadata']['name']}/POOLER_DATABASE_URL"}
    for env in _all_env(objects):
        assert env["PASSITO_LISTEN"]["value"] == "false"
    assert not [env for env in _all_env(render(EXTERNAL)) if "PASSITO_LISTEN" in env]


def test_cloudnativepg_pgbouncer_renders_a_transaction_pooler() -> None:
    objects = render(SCENARIOS["cloudnativepg-pgbouncer-keda"])
    (pooler,) = by_kind(objects, "Pooler")
    assert pooler["spec"]["cluster"] == {"name": CLUSTER}
    assert pooler["spec"]["type"] == "rw"
    assert pooler["spec"]["pgbouncer"]["poolMode"] == "transaction"
    assert pooler["metadata"]["name"] != CLUSTER  # CloudNativePG forbids a Pooler named like its Cluster
    assert set(_database_files(objects).values()) == {"built"}
    for _, pod in pod_specs(objects):
        builder = next(c for c in pod["initContainers"] if c["name"] == "database-url")
        assert pod["initContainers"][0] is builder, "the URL must exist before `migrate` runs"
        assert builder["args"][3] == pooler["metadata"]["name"]
        credentials = next(v for v in pod["volumes"] if v["name"] == "database-credentials")
        assert credentials["secret"]["secretName"] == f"{CLUSTER}-app"
        others = [c for c in containers(pod) if c["name"] != "database-url"]
        assert not [
            m for c in others for m in c.get("volumeMounts", []) if m["name"] == "database-credentials"
        ]


def test_the_pooler_url_init_container_builds_a_url_libpq_reads_back(tmp_path: Path) -> None:
    """The init container's own command, run here on files like the application secret's, with
    a password full of URL syntax; then run again, as after a pod restart."""
    objects = render(SCENARIOS["cloudnativepg-pgbouncer-keda"])
    pod = one(objects, "Deployment", "-worker")["spec"]["template"]["spec"]
    builder = next(c for c in pod["initContainers"] if c["name"] == "database-url")
    assert builder["command"] == ["python3", "-c"]
    credentials, target = tmp_path / "credentials", tmp_path / "database" / "database-url"
    credentials.mkdir()
    target.parent.mkdir()
    password = "p@ss:w/o?r#d% 'x\"é"
    for key, value in {"username": "passito", "password": password, "dbname": "passito"}.items():
        (credentials / key).write_text(value)
    script, host = builder["args"][0], builder["args"][3]
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", script, str(credentials), str(target), host], check=True, timeout=30
        )
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o400
    parsed = conninfo_to_dict(target.read_text())
    assert parsed == {
        "user": "passito",
        "password": password,
        "host": host,
        "port": "5432",
        "dbname": "passito",
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (EXTERNAL | {"pgbouncer": {"enabled": True}}, r"pgbouncer.enabled needs the pooler's URL"),
        (
            CNPG | {"pgbouncer": {"enabled": True}, "secrets": {"poolerUrl": "postgresql://p/db"}},
            r"secrets.poolerUrl must be empty with postgresql.mode cloudnativepg",
        ),
        (
            {
                "pgbouncer": {"enabled": True},
                "secrets": {"poolerUrl": "postgresql://p/db"},
                "autoscaling": {"engine": "keda"},
            },
            r"autoscaling.engine keda connects straight to PostgreSQL",
        ),
        ({"secrets": {"poolerUrl": "mysql://p"}}, r"/secrets/poolerUrl"),
        (
            {
                "postgresql": {
                    "mode": "cloudnativepg",
                    "cloudnativepg": {"instances": 2, "synchronousReplicas": 2},
                }
            },
            r"synchronousReplicas \(2\) must be below instances \(2\)",
        ),
        ({"postgresql": {"mode": "managed"}}, r"/postgresql/mode"),
        ({"postgresql": {"cloudnativepg": {"instances": 0}}}, r"/postgresql/cloudnativepg/instances"),
        ({"pgbouncer": {"cloudnativepg": {"parameters": {"default_pool_size": 20}}}}, r"want string"),
        ({"autoscaling": {"engine": "hpa"}}, r"/autoscaling/engine"),
        (
            EXTERNAL | {"autoscaling": {"engine": "keda", "cooldownPeriod": 7200}},
            r"autoscaling.cooldownPeriod \(7200\) must not exceed 3600 with autoscaling.engine keda",
        ),
    ],
)
def test_bad_combinations_are_rejected_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render(values)


# ---------------------------------------------------------------- autoscaling.engine


def _operator_objects(objects: list[dict[str, Any]]) -> list[str]:
    operator_kinds = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "WorkerAutoscaler"}
    return [
        f"{obj['kind']}/{obj['metadata']['name']}"
        for obj in objects
        if obj["kind"] in operator_kinds or obj["metadata"]["name"].endswith("-operator")
    ]


def test_keda_engine_renders_a_scaled_object_from_the_autoscaler_values_and_no_operator() -> None:
    values = SCENARIOS["keda"]
    a = values["autoscaling"]
    objects = render(values)
    assert _operator_objects(objects) == []
    worker = one(objects, "Deployment", "-worker")
    assert "replicas" not in worker["spec"], "KEDA's HPA owns the replicas"
    (scaled,) = by_kind(objects, "ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {"name": worker["metadata"]["name"]}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (a["minReplicas"], a["maxReplicas"])
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (a["pollingInterval"], a["cooldownPeriod"])
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == a["cooldownPeriod"]
    assert "fallback" not in spec  # fallback.replicas unset: KEDA keeps its default behaviour
    assert scaled["metadata"]["annotations"] == {
        "autoscaling.keda.sh/paused-replicas": str(a["pausedReplicas"])
    }
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["metadata"] == {
        "query": "SELECT ready + processing FROM passito_jobs.load(NULL::text[])",
        "targetQueryValue": str(a["scaleUpThreshold"]),
        "activationTargetQueryValue": "0",
    }
    (auth,) = by_kind(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    secret = one(objects, "Secret", f"{RELEASE}-passito-jobs")["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": secret, "key": "PASSITO_DATABASE_URL"}
    ]
    assert "scaledobject" in notes(values)


def test_keda_fallback_and_queues_follow_the_autoscaler_values() -> None:
    spec = by_kind(render(SCENARIOS["cloudnativepg-pgbouncer-keda"]), "ScaledObject")[0]["spec"]
    assert spec["fallback"] == {"failureThreshold": 3, "replicas": 2}
    assert spec["minReplicaCount"] == 0
    query = spec["triggers"][0]["metadata"]["query"]
    assert query == "SELECT ready + processing FROM passito_jobs.load(ARRAY['default', 'emails']::text[])"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        # The Cluster's own URL, not the pooler's: KEDA's driver prepares statements.
        (SCENARIOS["cloudnativepg-pgbouncer-keda"], [("connection", f"{CLUSTER}-app", "uri")]),
        (
            {"postgresql": {"external": {"existingSecret": "pg-app"}}, "autoscaling": {"engine": "keda"}},
            [("connection", "pg-app", "uri")],
        ),
        (
            {"postgresql": {"mode": "bundled"}, "autoscaling": {"engine": "keda"}},
            [("password", f"{RELEASE}-passito-jobs-postgresql", "POSTGRES_PASSWORD")],
        ),
    ],
)
def test_keda_connects_straight_to_postgresql(
    values: dict[str, Any], expected: list[tuple[str, str, str]]
) -> None:
    objects = render(values)
    (auth,) = by_kind(objects, "TriggerAuthentication")
    assert [(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]] == expected
    metadata = by_kind(objects, "ScaledObject")[0]["spec"]["triggers"][0]["metadata"]
    if expected[0][0] == "password":
        # KEDA runs in its own namespace: the bundled service by its full name.
        assert metadata["host"] == f"{RELEASE}-passito-jobs-postgresql.{NAMESPACE}.svc"
        assert (metadata["userName"], metadata["dbName"], metadata["port"]) == ("passito", "passito", "5432")


def test_engine_none_and_the_deprecated_autoscaling_enabled() -> None:
    objects = render(SCENARIOS["external-pgbouncer"])
    assert _operator_objects(objects) == []
    assert not by_kind(objects, "ScaledObject")
    assert one(objects, "Deployment", "-worker")["spec"]["replicas"] == 3
    deprecated = {"autoscaling": {"enabled": False}} | EXTERNAL
    assert _operator_objects(render(deprecated)) == []
    assert "DEPRECATED: autoscaling.enabled is read as autoscaling.engine none" in notes(deprecated)
    assert "DEPRECATED" not in notes(EXTERNAL)
    with pytest.raises(helm_python.HelmError, match=r"autoscaling.enabled=false \(deprecated\) means"):
        render({"autoscaling": {"enabled": False, "engine": "keda"}})


def test_the_operator_can_run_elsewhere() -> None:
    objects = render(EXTERNAL | {"operator": {"enabled": False}})
    assert by_kind(objects, "WorkerAutoscaler")
    assert not [name for name, _ in pod_specs(objects) if name.endswith("-operator")]
    assert not by_kind(objects, "Role")


def test_the_load_query_quotes_queue_names_as_postgresql_reads_them(pg_admin_url: str) -> None:
    """The queues become SQL string literals; PostgreSQL reads back exactly the names given."""
    queues = ["default", "it's", "back\\slash", "ünïcødé", "semi;colon -- x", "''"]
    values = EXTERNAL | {"autoscaling": {"engine": "keda", "queues": queues}}
    query = by_kind(render(values), "ScaledObject")[0]["spec"]["triggers"][0]["metadata"]["query"]
    match = re.fullmatch(r"SELECT ready \+ processing FROM passito_jobs\.load\((.*)\)", query)
    assert match, query
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        row = conn.execute(f"SELECT {match.group(1)}").fetchone()
        assert row is not None
        assert row[0] == queues
        empty = by_kind(render(EXTERNAL | {"autoscaling": {"engine": "keda"}}), "ScaledObject")[0]
        argument = re.search(r"load\((.*)\)", empty["spec"]["triggers"][0]["metadata"]["query"])
        assert argument is not None
        assert conn.execute(f"SELECT {argument.group(1)}").fetchone() == (None,)
