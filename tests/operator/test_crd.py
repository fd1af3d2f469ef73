"""The WorkerAutoscaler CRD: a valid Kubernetes object, and a schema that accepts what it should.

No API server runs here, so its two jobs are done in Python: `jsonschema` (Draft 4, the dialect
of OpenAPI v3.0 schemas) validates objects against the openAPIV3Schema, with unknown fields
rejected as `kubectl apply` does by default (strict field validation); the CEL rules
(x-kubernetes-validations) each have a Python twin here, applied after the schema's defaults,
as the API server applies them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from passito_jobs.supervisor.autoscaler import (
    CONDITION_TYPES,
    DEFAULTS,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    AutoscalerSpec,
    Observation,
    Target,
    reconcile,
)

CHART = Path(__file__).parents[2] / "charts" / "passito-jobs"
CRD = yaml.safe_load((CHART / "crds" / "workerautoscaler.yaml").read_text())
EXAMPLE = yaml.safe_load((CHART / "examples" / "workerautoscaler.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

# The CEL rules of spec, and what each means.
CEL_RULES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "self.minReplicas <= self.maxReplicas": lambda spec: spec["minReplicas"] <= spec["maxReplicas"],
    "self.scaleDownThreshold <= self.scaleUpThreshold": lambda spec: (
        spec["scaleDownThreshold"] <= spec["scaleUpThreshold"]
    ),
}


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with unknown fields rejected (metadata excepted), as strict validation does."""
    schema = copy.deepcopy(schema)

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node and path != ".metadata":
            node["additionalProperties"] = False
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    return schema


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting: fill absent fields that have a default, recursively."""
    if not isinstance(value, dict) or "properties" not in schema:
        return value
    result = dict(value)
    for name, child in schema["properties"].items():
        if name not in result and "default" in child:
            result[name] = copy.deepcopy(child["default"])
        if name in result:
            result[name] = with_defaults(child, result[name])
    return result


def problems(obj: dict[str, Any]) -> list[str]:
    """What the API server would reject `obj` for: schema errors, then CEL rule messages."""
    validator = jsonschema.Draft4Validator(strict(SCHEMA))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    if errors:
        return errors
    spec = with_defaults(SCHEMA, obj)["spec"]
    rules = SCHEMA["properties"]["spec"]["x-kubernetes-validations"]
    return [rule["message"] for rule in rules if not CEL_RULES[rule["rule"]](spec)]


def autoscaler(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": "worker"},
        "spec": {"scaleTargetRef": {"name": "passito-jobs-worker"}, **spec},
    }


@pytest.mark.parametrize("version", ["1.28.0", "1.30.0", kubernetes_validate.latest_version()])
def test_the_crd_is_a_valid_kubernetes_object(version: str) -> None:
    kubernetes_validate.validate(CRD, version, strict=True)


def test_the_crd_names_the_resource_the_operator_serves() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert (spec["group"], spec["scope"], spec["names"]["kind"], spec["names"]["plural"]) == (
        GROUP,
        "Namespaced",
        KIND,
        PLURAL,
    )
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
    assert version["subresources"] == {"status": {}}
    columns = [(c["name"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("Target", ".spec.scaleTargetRef.name"),
        ("Min", ".spec.minReplicas"),
        ("Max", ".spec.maxReplicas"),
        ("Desired", ".status.desiredReplicas"),
        ("Current", ".status.currentReplicas"),
        ("Queue", ".status.load"),
        ("Paused", '.status.conditions[?(@.type=="Paused")].status'),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_every_cel_rule_has_a_python_twin() -> None:
    rules = [rule["rule"] for rule in SCHEMA["properties"]["spec"]["x-kubernetes-validations"]]
    assert sorted(rules) == sorted(CEL_RULES)


def test_the_schema_defaults_are_the_operators_defaults() -> None:
    spec = with_defaults(SCHEMA, autoscaler())["spec"]
    assert {key: spec[key] for key in DEFAULTS if key in spec} == {
        key: value for key, value in DEFAULTS.items() if key != "failureThreshold"
    }
    assert spec["fallback"] == {"failureThreshold": DEFAULTS["failureThreshold"]}
    assert AutoscalerSpec.parse(spec) == AutoscalerSpec.parse(autoscaler()["spec"])


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(EXAMPLE, id="the example in the chart"),
        pytest.param(autoscaler(), id="only the target"),
        pytest.param(autoscaler(minReplicas=0, maxReplicas=1), id="scale to zero"),
        pytest.param(autoscaler(minReplicas=4, maxReplicas=4), id="min equals max"),
        pytest.param(autoscaler(scaleUpThreshold=2.5, scaleDownThreshold=0), id="fractional thresholds"),
        pytest.param(autoscaler(queues=["emails", "pdfs"], fallback={"replicas": 0}), id="queues, fallback"),
    ],
)
def test_valid_autoscalers_are_accepted(obj: dict[str, Any]) -> None:
    assert problems(obj) == []
    AutoscalerSpec.parse(with_defaults(SCHEMA, obj)["spec"])  # and the operator can use them


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ({**autoscaler(), "spec": {}}, "spec: 'scaleTargetRef' is a required property"),
        (autoscaler(scaleTargetRef={"name": ""}), "spec.scaleTargetRef.name: '' should be non-empty"),
        (autoscaler(minReplicas=-1), "spec.minReplicas: -1 is less than the minimum of 0"),
        (autoscaler(maxReplicas=0), "spec.maxReplicas: 0 is less than the minimum of 1"),
        (autoscaler(maxReplicas="ten"), "spec.maxReplicas: 'ten' is not of type 'integer'"),
        (
            autoscaler(scaleUpThreshold=0),
            "spec.scaleUpThreshold: 0 is less than or equal to the minimum of 0",
        ),
        (autoscaler(pollingInterval=0), "spec.pollingInterval: 0 is less than the minimum of 1"),
        (autoscaler(cooldownPeriod=1.5), "spec.cooldownPeriod: 1.5 is not of type 'integer'"),
        (autoscaler(queues=[""]), "spec.queues.0: '' should be non-empty"),
        (autoscaler(fallback={"failureThreshold": 0}), "spec.fallback.failureThreshold: 0 is less than"),
        (
            autoscaler(manualOverrideSeconds=-5),
            "spec.manualOverrideSeconds: -5 is less than the minimum of 0",
        ),
        (
            autoscaler(minReplica=2),
            "spec: Additional properties are not allowed ('minReplica' was unexpected)",
        ),
        (autoscaler(minReplicas=5, maxReplicas=2), "minReplicas must not exceed maxReplicas"),
        (autoscaler(minReplicas=11), "minReplicas must not exceed maxReplicas"),  # against the default max
        (autoscaler(scaleDownThreshold=6), "scaleDownThreshold must not exceed scaleUpThreshold"),
    ],
)
def test_invalid_autoscalers_are_rejected_with_a_message(obj: dict[str, Any], problem: str) -> None:
    found = problems(obj)
    assert any(message.startswith(problem) for message in found), found


def test_the_status_the_operator_writes_fits_the_schema() -> None:
    outcome = reconcile(
        Observation(
            spec=EXAMPLE["spec"],
            annotations={},
            status={},
            generation=2,
            target=Target(1, 1),
            load=39,
            now=datetime(2030, 1, 1, tzinfo=UTC),
        )
    )
    status = {key: value for key, value in outcome.status.items() if value is not None}
    assert problems({**EXAMPLE, "status": status}) == []
    enum = SCHEMA["properties"]["status"]["properties"]["conditions"]["items"]["properties"]["type"]["enum"]
    assert tuple(enum) == CONDITION_TYPES
    assert [c["type"] for c in status["conditions"]] == list(CONDITION_TYPES)
