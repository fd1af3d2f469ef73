"""The chart's dashboard (`web:` values): off by default; when on, a locked-down Deployment with its
auth files mounted read-only, a Service, an optional Ingress, a NetworkPolicy and a helm test."""

from __future__ import annotations

import base64
import hashlib
from pathlib import PurePosixPath
from typing import Any

import helm_python
import pytest

from tests.chart.render import by_kind, containers, env_of, one, render

USERS = "asha:admin:$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA\n"
ON = {"web": {"enabled": True, "auth": {"users": USERS}}}


def names(objects: list[dict[str, Any]]) -> set[str]:
    return {f"{o['kind']}/{o['metadata']['name']}" for o in objects}


def test_the_dashboard_is_off_by_default() -> None:
    assert not [name for name in names(render()) if "-web" in name]


def test_the_deployment_serves_from_the_operations_image_with_auth_files() -> None:
    objects = render(ON)
    deployment = one(objects, "Deployment", "-web")
    pod = deployment["spec"]["template"]["spec"]
    container = containers(pod)[0]
    assert container["args"] == ["web"]
    assert container["image"].endswith("passito-jobs-health:0.1.0")
    env = env_of(container)
    assert env["PASSITO_WEB_HOST"]["value"] == "0.0.0.0"
    assert env["PASSITO_WEB_AUTH"]["value"] == "basic,token"
    assert env["PASSITO_WEB_USERS_FILE"]["value"] == "/etc/passito-web/users"
    assert env["PASSITO_WEB_TOKENS_FILE"]["value"] == "/etc/passito-web/test-tokens"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["automountServiceAccountToken"] is False
    mount = next(m for m in container["volumeMounts"] if m["name"] == "auth")
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert volume["projected"]["defaultMode"] == 0o400
    secrets = [source["secret"]["name"] for source in volume["projected"]["sources"]]
    assert secrets == ["rel-passito-jobs-web-auth", "rel-passito-jobs-web-csrf", "rel-passito-jobs-web-test"]
    assert not [name for name, var in env.items() if "$argon2" in str(var)]  # files, never variables
    service = one(objects, "Service", "-web")
    assert service["spec"]["ports"][0]["port"] == 8080


def secret_data(secret: dict[str, Any], key: str) -> str:
    if "stringData" in secret:
        return str(secret["stringData"][key])
    return base64.b64decode(secret["data"][key]).decode()


def test_the_helm_test_calls_the_health_api_with_its_own_token() -> None:
    objects = render(ON)
    pod = one(objects, "Pod", "-web-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    env = env_of(container)
    assert env["URL"]["value"] == "http://rel-passito-jobs-web:8080/api/v1/health"
    assert "TOKEN" not in env  # a secret is a file, never an environment variable
    token_file = PurePosixPath(env["TOKEN_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if token_file.is_relative_to(m["mountPath"]))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": "rel-passito-jobs-web-test",
                "items": [{"key": "token", "path": token_file.name}],
            }
        }
    ]
    assert "Authorization" in container["args"][0]
    secret = one(objects, "Secret", "-web-test")
    token = secret_data(secret, "token")
    assert len(token) == 48
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert secret_data(secret, "tokens") == f"helm-test:viewer:sha256:{digest}\n"


def test_header_mode_behind_a_proxy() -> None:
    values = {
        "web": {
            "enabled": True,
            "auth": {"mode": "header", "trustedProxies": ["10.2.0.0/16"], "roleHeader": "X-Forwarded-Role"},
            "readOnly": True,
        }
    }
    container = containers(one(render(values), "Deployment", "-web")["spec"]["template"]["spec"])[0]
    env = env_of(container)
    assert env["PASSITO_WEB_AUTH"]["value"] == "header,token"
    assert env["PASSITO_WEB_TRUSTED_PROXIES"]["value"] == "10.2.0.0/16"
    assert env["PASSITO_WEB_ROLE_HEADER"]["value"] == "X-Forwarded-Role"
    assert env["PASSITO_WEB_READ_ONLY"]["value"] == "true"
    assert "PASSITO_WEB_USERS_FILE" not in env


def test_an_existing_secret_replaces_the_charts() -> None:
    values = {"web": {"enabled": True, "auth": {"existingSecret": "dashboard-users"}}}
    objects = render(values)
    assert not [s for s in by_kind(objects, "Secret") if s["metadata"]["name"].endswith("-web-auth")]
    pod = one(objects, "Deployment", "-web")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert volume["projected"]["sources"][0]["secret"]["name"] == "dashboard-users"
    env = env_of(containers(pod)[0])
    assert env["PASSITO_WEB_TOKENS_FILE"]["value"] == "/etc/passito-web/tokens,/etc/passito-web/test-tokens"


def auth_items(pod: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Secret name -> {key: path} of the dashboard's `auth` volume."""
    volume = next(v for v in pod["volumes"] if v["name"] == "auth")
    return {
        source["secret"]["name"]: {item["key"]: item["path"] for item in source["secret"]["items"]}
        for source in volume["projected"]["sources"]
    }


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_every_replica_mounts_the_same_generated_csrf_key(mode: str) -> None:
    objects = render({"web": {"enabled": True, "replicas": 3, "auth": {"mode": mode, "users": USERS}}})
    key = secret_data(one(objects, "Secret", "-web-csrf"), "csrf-key")
    assert len(key) == 64
    assert key.isalnum()
    pod = one(objects, "Deployment", "-web")["spec"]["template"]["spec"]
    container = containers(pod)[0]
    env = env_of(container)
    assert env["PASSITO_WEB_CSRF_KEY_FILE"] == {
        "name": "PASSITO_WEB_CSRF_KEY_FILE",
        "value": "/etc/passito-web/csrf-key",
    }
    assert auth_items(pod)["rel-passito-jobs-web-csrf"] == {"csrf-key": "csrf-key"}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "auth")
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/passito-web", True)
    assert key not in str(env)
    assert not [o for o in by_kind(objects, "ConfigMap") if key in str(o)]


def test_an_existing_auth_secret_needs_no_csrf_key() -> None:
    """Releases that name their own users Secret upgrade unchanged: the key is the chart's."""
    objects = render({"web": {"enabled": True, "auth": {"existingSecret": "dashboard-users"}}})
    pod = one(objects, "Deployment", "-web")["spec"]["template"]["spec"]
    items = auth_items(pod)
    assert "csrf-key" not in items["dashboard-users"]
    assert items["rel-passito-jobs-web-csrf"] == {"csrf-key": "csrf-key"}
    assert len(secret_data(one(objects, "Secret", "-web-csrf"), "csrf-key")) == 64


def test_an_existing_csrf_secret_supplies_the_key() -> None:
    objects = render(
        {"web": {"enabled": True, "auth": {"users": USERS}, "csrfKey": {"existingSecret": "my-csrf"}}}
    )
    assert not [s for s in by_kind(objects, "Secret") if "csrf-key" in str(s)]  # none generated
    pod = one(objects, "Deployment", "-web")["spec"]["template"]["spec"]
    assert auth_items(pod)["my-csrf"] == {"csrf-key": "csrf-key"}
    assert env_of(containers(pod)[0])["PASSITO_WEB_CSRF_KEY_FILE"]["value"] == "/etc/passito-web/csrf-key"


def test_ingress_and_network_policy() -> None:
    values = {
        "networkPolicy": {"enabled": True},
        "web": {
            "enabled": True,
            "auth": {"users": USERS},
            "ingress": {"enabled": True, "host": "jobs.example.org", "className": "nginx"},
            "networkPolicy": {"from": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}]},
        },
    }
    objects = render(values)
    ingress = one(objects, "Ingress", "-web")
    assert ingress["spec"]["rules"][0]["host"] == "jobs.example.org"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    policy = one(objects, "NetworkPolicy", "-web")
    assert policy["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"name": "ingress"}}}
    ]
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"web": {"enabled": True}}, r"web.auth.mode basic needs web.auth.users"),
        (
            {"web": {"enabled": True, "auth": {"mode": "header"}}},
            r"web.auth.mode header needs web.auth.trustedProxies",
        ),
        ({"web": {"enabled": True, "auth": {"mode": "magic"}}}, r"/web/auth/mode"),
        (
            {"web": {"enabled": True, "auth": {"users": USERS}, "ingress": {"enabled": True}}},
            r"web.ingress.host",
        ),
        ({"web": {"enabel": True}}, r"additional properties 'enabel' not allowed"),
        ({"web": {"maskFields": ["a,b"]}}, r"/web/maskFields/0"),
    ],
)
def test_bad_dashboard_values_are_rejected(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render(values)
