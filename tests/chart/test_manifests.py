"""manifests/ is the chart rendered with its default values (`make manifests`), kept in sync."""

from __future__ import annotations

import yaml
from hack.render_manifests import MANIFESTS, SECRET, expected_files


def test_manifests_are_up_to_date() -> None:
    expected = expected_files()
    present = {str(p.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("*") if p.is_file()}
    assert present == set(expected), "run `make manifests`"
    for name, text in expected.items():
        assert (MANIFESTS / name).read_text() == text, (
            f"manifests/{name} is out of date: run `make manifests`"
        )


def test_manifests_carry_no_secret_and_no_helm_hook() -> None:
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "passito-jobs.yaml").read_text()) if d]
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert not [d for d in docs if d["kind"] == "Pod"], "the helm test pod is not a manifest"
    for doc in docs:
        assert not any(k.startswith("helm.sh/hook") for k in doc["metadata"].get("annotations", {}))
    # The pods read their secrets as files, from the one Secret made by hand.
    pods = [doc["spec"]["template"]["spec"] for doc in docs if doc["kind"] in {"Deployment", "Job"}]
    refs = {
        source["secret"]["name"]
        for pod in pods
        for volume in pod.get("volumes", [])
        for source in volume.get("projected", {}).get("sources", [])
        if "secret" in source
    }
    assert refs == {SECRET}
    assert not [
        item
        for pod in pods
        for container in pod["containers"]
        for item in container.get("env", [])
        if "valueFrom" in item
    ]
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert kustomization["resources"][-1] == "passito-jobs.yaml"
    assert {"WorkerAutoscaler", "Deployment", "CronJob", "Job", "Role"} <= {d["kind"] for d in docs}
