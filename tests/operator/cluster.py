"""A Kubernetes API for the operator tests: kmock's KubernetesEmulator on a loopback port.

No kube-apiserver can run here, so this is the closest real thing: a stateful HTTP server that
speaks the Kubernetes API (discovery, list, watch, get, create, merge-patch, delete, finalizers).
It runs on its own event loop in a thread; tests talk to it over HTTP, as kubectl would, and
kopf (in the real runtime) talks to it through the operator's login handler.

A few things a real API server does are added here: names for `generateName` (kopf's Events use
it); uid, creationTimestamp and generation on create; and a resourceVersion that changes with
every write (kopf's JSON patches test it). Defaulting and validation from the CRD, and the
generation bump on spec changes, are not emulated; tests/operator/test_crd.py checks the schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock
import yaml

CRD_PATH = Path(__file__).parents[2] / "charts" / "passito-jobs" / "crds" / "workerautoscaler.yaml"
AUTOSCALERS = "/apis/jobs.passito.io/v1/namespaces/{ns}/workerautoscalers"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
EVENTS = "/api/v1/namespaces/{ns}/events"

_names = itertools.count(1)
_versions = itertools.count(1)


class _Emulator(kmock.KubernetesEmulator):
    """The emulator plus the metadata a real API server maintains, and RBAC-like refusals."""

    forbidden: set[tuple[str, str]] = set()  # (method, path) answered 403, as RBAC would

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if (request.method.value, request.url.path) in self.forbidden:
            raise kmock.KubernetesError(status=403, reason="Forbidden", message="forbidden by the test")
        version = str(next(_versions))
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{next(_names):05d}"
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = version
        elif request.action == kmock.action.UPDATE and isinstance(request.data, dict):  # merge patch
            request.data.setdefault("metadata", {})["resourceVersion"] = version
        elif request.action == kmock.action.UPDATE and isinstance(request.data, list):  # JSON patch
            self._check_version_tests(request)
            request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        return await super()._handle(request)

    def _check_version_tests(self, request: kmock.Request) -> None:
        """A failed `test` of the resourceVersion is a 422, as kopf expects (not kmock's 500)."""
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects:
            return
        current = self.objects[key].get("metadata", {}).get("resourceVersion")
        for op in request.data:
            if (
                op.get("op") == "test"
                and op.get("path") == "/metadata/resourceVersion"
                and op.get("value") != current
            ):
                raise kmock.KubernetesError(status=422, reason="Invalid", message="resourceVersion changed")


class Cluster:
    """The emulator, started and stopped from synchronous tests."""

    def __init__(self) -> None:
        self.url = ""
        self.emulator: _Emulator | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-emulator", daemon=True)
        self._stack = contextlib.AsyncExitStack()

    def start(self) -> Cluster:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        self.create(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(CRD_PATH.read_text())
        )
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stack.aclose(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _start(self) -> None:
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per request
        emulator = self.emulator = await self._stack.enter_async_context(_Emulator())
        emulator.forbidden = set()
        server = await self._stack.enter_async_context(kmock.Server(emulator))
        self.url = str(server.url).rstrip("/")
        info = kmock.ResourceInfo
        read = {"get", "list", "watch"}
        write = {"create", "patch", "update", "delete"}
        # kopf waits for namespaces and CRDs to be listable before it starts watching.
        emulator.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs=read | write)
        emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
            kind="CustomResourceDefinition", namespaced=False, verbs=read | write
        )
        emulator.resources["jobs.passito.io/v1/workerautoscalers"] = info(
            kind="WorkerAutoscaler",
            singular="workerautoscaler",
            namespaced=True,
            verbs=read | write,
            subresources={"status"},
            shortnames={"wa"},
        )
        emulator.resources["apps/v1/deployments"] = info(
            kind="Deployment", namespaced=True, verbs=read | write, subresources={"status", "scale"}
        )
        emulator.resources["v1/events"] = info(kind="Event", namespaced=True, verbs=read | write)

    def forbid(self, method: str, path: str, *, forbidden: bool = True) -> None:
        """Answer `method path` with 403 Forbidden (as a missing RBAC rule would), or stop."""
        assert self.emulator is not None
        (self.emulator.forbidden.add if forbidden else self.emulator.forbidden.discard)((method, path))

    # ------------------------------------------------------------ kubectl, over HTTP

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {
            "Content-Type": "application/merge-patch+json" if method == "PATCH" else "application/json"
        }
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                text = response.read().decode()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            text = exc.read().decode()
            return exc.code, json.loads(text) if text else None

    def get(self, path: str) -> Any:
        status, data = self.request("GET", path)
        return data if status == 200 else None

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, data = self.request("POST", path, body)
        assert status in (200, 201), (status, data)
        return dict(data)

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, data = self.request("PATCH", path, body)
        assert status == 200, (status, data)
        return dict(data)

    def delete(self, path: str) -> None:
        status, data = self.request("DELETE", path)
        assert status == 200, (status, data)

    # ------------------------------------------------------------ the objects the tests use

    def create_deployment(self, name: str, replicas: int, ns: str = "default") -> None:
        self.create(
            DEPLOYMENTS.format(ns=ns),
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}},
            },
        )

    def deployment(self, name: str, ns: str = "default") -> dict[str, Any] | None:
        found = self.get(f"{DEPLOYMENTS.format(ns=ns)}/{name}")
        return None if found is None else dict(found)

    def replicas(self, name: str, ns: str = "default") -> int | None:
        found = self.deployment(name, ns)
        return None if found is None else int(found["spec"]["replicas"])

    def kubectl_scale(self, name: str, replicas: int, ns: str = "default") -> None:
        """What `kubectl scale deployment NAME --replicas=N` sends."""
        self.patch(f"{DEPLOYMENTS.format(ns=ns)}/{name}/scale", {"spec": {"replicas": replicas}})

    def create_autoscaler(
        self, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None, ns: str = "default"
    ) -> None:
        self.create(
            AUTOSCALERS.format(ns=ns),
            {
                "apiVersion": "jobs.passito.io/v1",
                "kind": "WorkerAutoscaler",
                "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
                "spec": spec,
            },
        )

    def autoscaler(self, name: str, ns: str = "default") -> dict[str, Any]:
        return dict(self.get(f"{AUTOSCALERS.format(ns=ns)}/{name}") or {})

    def annotate_autoscaler(self, name: str, annotations: dict[str, str | None], ns: str = "default") -> None:
        self.patch(f"{AUTOSCALERS.format(ns=ns)}/{name}", {"metadata": {"annotations": annotations}})

    def status(self, name: str, ns: str = "default") -> dict[str, Any]:
        return dict(self.autoscaler(name, ns).get("status") or {})

    def condition(self, name: str, kind: str, ns: str = "default") -> dict[str, Any]:
        for condition in self.status(name, ns).get("conditions") or []:
            if condition["type"] == kind:
                return dict(condition)
        return {}

    def events(self, ns: str = "default", *, about: str | None = None) -> list[dict[str, Any]]:
        items = (self.get(EVENTS.format(ns=ns)) or {}).get("items") or []
        return [e for e in items if about is None or e.get("involvedObject", {}).get("name") == about]

    def event_lines(self, ns: str = "default", *, about: str | None = None) -> list[str]:
        """Events as `Type Reason: message`, oldest first."""
        return [f"{e['type']} {e['reason']}: {e['message']}" for e in self.events(ns, about=about)]
