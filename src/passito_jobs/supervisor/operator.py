"""`passito-jobs operator`: the kopf operator that scales worker Deployments to the queue.

Each WorkerAutoscaler gets a kopf daemon that polls every `pollingInterval`: it reads the
Deployment and the queue load, lets `autoscaler.reconcile` decide, then patches the Deployment,
writes the status, posts Events and updates the Prometheus metrics. Decisions and all state live
in the status and on the Deployment (`autoscaler.py`), so the operator can restart at any time.

It runs as one replica, standalone (no kopf peering): peering would need its own CRDs and RBAC,
and two operators overlapping during a rollout are harmless because both read and write the
same state. `kopf run -m passito_jobs.supervisor.operator --standalone` runs it too (the tests
do), with the same handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from passito_jobs.database import DatabaseSettings
from passito_jobs.httpserver import ProbeServer
from passito_jobs.supervisor.autoscaler import (
    GROUP,
    PLURAL,
    SCALED_REPLICAS_ANNOTATION,
    VERSION,
    Observation,
    Outcome,
    Target,
    polling_interval,
    reconcile,
)
from passito_jobs.supervisor.kube import (
    ClusterUnavailableError,
    KubeApi,
    KubeApiError,
    connection_info,
    is_api_failure,
    quiet_api_failures,
)
from passito_jobs.supervisor.load import LoadReader, LoadUnavailableError
from passito_jobs.supervisor.policy import Direction
from passito_jobs.supervisor.settings import OperatorSettings

log = logging.getLogger("passito_jobs.operator")

FINALIZER = f"{GROUP}/operator"
_LABELS = ("namespace", "autoscaler")


class OperatorMetrics:
    """The operator's metrics (docs/metrics.md): the state of each WorkerAutoscaler, registered
    when the operator starts (`start()`), not when this module is imported."""

    _started: OperatorMetrics | None = None

    @classmethod
    def start(cls, registry: CollectorRegistry = REGISTRY) -> OperatorMetrics:
        """The metrics of this operator; those of an earlier run in this process (tests run the
        operator many times) are unregistered first."""
        if cls._started is not None:
            cls._started.unregister()
        cls._started = cls(registry)
        return cls._started

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"passito_jobs_autoscaler_{name}", doc, _LABELS, registry=registry)

        self.desired = gauge("desired_replicas", "Replicas the autoscaler wants.")
        self.current = gauge("current_replicas", "The worker Deployment's replicas after the last poll.")
        self.load = gauge("load", "Jobs ready now plus jobs in flight, in the queues counted.")
        self.paused = gauge("paused", "1 while a pause annotation freezes scaling.")
        self.manual_override = gauge("manual_override", "1 while a manual replica change is being held.")
        self.fallback = gauge("fallback", "1 while the database is unreachable past failureThreshold.")
        self.scale_events = Counter(
            "passito_jobs_autoscaler_scale_events",
            "Scales of the worker Deployment.",
            (*_LABELS, "direction"),
            registry=registry,
        )
        self.database_errors = Counter(
            "passito_jobs_autoscaler_database_errors",
            "Failed reads of the queue load.",
            _LABELS,
            registry=registry,
        )
        self.registry = registry

    def series(self) -> list[Gauge | Counter]:
        return [self.desired, self.current, self.load, self.paused, self.manual_override, self.fallback]

    def unregister(self) -> None:
        for metric in [*self.series(), self.scale_events, self.database_errors]:
            with contextlib.suppress(KeyError):
                self.registry.unregister(metric)


@dataclass(frozen=True)
class OperatorConfig:
    """What the operator runs on: its settings group and where the queue is."""

    operator: OperatorSettings
    database: DatabaseSettings

    @classmethod
    def from_env(cls) -> OperatorConfig:
        return cls(OperatorSettings.from_env(), DatabaseSettings.from_env())


@dataclass
class Runtime:
    """Operator-wide resources, shared by every autoscaler's daemon through kopf's memo."""

    config: OperatorConfig
    kube: KubeApi
    reader: LoadReader | None = None
    server: ProbeServer | None = None
    metrics: OperatorMetrics | None = None
    polling: set[tuple[str, str]] = field(default_factory=set)

    @property
    def settings(self) -> OperatorSettings:
        return self.config.operator

    def start(self) -> None:
        url = self.config.database.url
        if not url:
            raise kopf.PermanentError("PASSITO_DATABASE_URL must be set: the operator reads the queue there")
        database = self.config.database
        self.reader = LoadReader(url, timeout=database.connect_timeout, prepare=database.prepare)
        if self.metrics is None:
            self.metrics = OperatorMetrics.start()
        if self.settings.metrics_port:
            self.server = ProbeServer(self.settings.metrics_port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.reader is not None:
            self.reader.close()
        if self.metrics is not None:
            self.metrics.unregister()
            self.metrics = None
        await self.kube.close()


def runtime_of(memo: Any, kopf_settings: kopf.OperatorSettings) -> Runtime:
    """The operator's Runtime, created by whichever handler runs first (login or startup).

    `passito-jobs operator` passes its OperatorConfig (environment plus flags) in the memo; under
    `kopf run` it comes from the environment.
    """
    runtime = memo.get("passito_runtime")
    if runtime is None:
        config = memo.get("passito_config") or OperatorConfig.from_env()
        kube = KubeApi(lambda: connection_info(config.operator.kube_server, kopf_settings))
        runtime = memo["passito_runtime"] = Runtime(config, kube)
    assert isinstance(runtime, Runtime)
    return runtime


# ---------------------------------------------------------------- operator-wide handlers


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Only explicit Events (scales, problems) reach Kubernetes; log lines stay in the log.
    settings.posting.loggers = False
    runtime = runtime_of(memo, settings)
    if runtime.settings.namespaces:
        # Exact namespaces need no discovery: the chart's Role is namespaced and grants no
        # `list namespaces`, which kopf would otherwise try (and warn about) at every start.
        settings.scanning.disabled = True
    runtime.start()
    log.info(
        "Operator started: metrics on port %s, namespaces %s",
        runtime.settings.metrics_port or "off",
        ",".join(runtime.settings.namespaces) or "all",
    )


@kopf.on.cleanup()
async def cleanup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    await runtime_of(memo, settings).close()


@kopf.on.login()
def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo | None:
    runtime = runtime_of(memo, settings)
    info = connection_info(runtime.settings.kube_server, settings)
    if info is not None:
        runtime.kube.use(info)
    return info


@kopf.on.probe(id="autoscalers")
def autoscalers_probe(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> int:
    """Liveness answers only while kopf's event loop runs; it reports the autoscalers polled."""
    return len(runtime_of(memo, settings).polling)


# ---------------------------------------------------------------- one daemon per WorkerAutoscaler


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_backoff=10, cancellation_timeout=5)
async def autoscale(
    body: kopf.Body,
    namespace: str | None,
    name: str | None,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    """Poll until the WorkerAutoscaler is deleted or the operator stops.

    A stop ends the wait between polls at once; a poll in progress may finish (it is bounded by
    the database connect timeout), so the daemon exits by itself rather than being cancelled.
    """
    runtime = memo["passito_runtime"]
    assert isinstance(runtime, Runtime)
    assert namespace, "WorkerAutoscalers are namespaced"
    assert name
    poller = Poller(runtime, namespace, name)
    runtime.polling.add((namespace, name))
    try:
        while not stopped:
            interval = await poller.poll(body)
            await stopped.wait(interval)
    finally:
        runtime.polling.discard((namespace, name))
        poller.forget_metrics()


class Poller:
    """The I/O around `reconcile` for one WorkerAutoscaler."""

    def __init__(self, runtime: Runtime, namespace: str, name: str) -> None:
        self.runtime = runtime
        self.namespace = namespace
        self.name = name
        self.labels = (namespace, name)
        self.kv = {"namespace": namespace, "autoscaler": name}
        self.status: dict[str, Any] | None = None  # the last status written: fresher than the watch
        self.api_error = ""  # the last API failure warned about: each is posted once, not per poll

    @property
    def metrics(self) -> OperatorMetrics:
        assert self.runtime.metrics is not None, "the operator has started"
        return self.runtime.metrics

    @property
    def path(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{self.name}"

    def deployment_path(self, deployment: str) -> str:
        return f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{deployment}"

    async def poll(self, body: kopf.Body) -> float:
        """One poll; returns the seconds until the next."""
        try:
            outcome = await self._poll(body)
        except KubeApiError as exc:
            if exc.status == 409:
                log.info("the Deployment changed while being scaled; reading it again", extra={"kv": self.kv})
                return 1.0
            log.error("Kubernetes API request failed: %s", exc, extra={"kv": self.kv})
            if str(exc) != self.api_error:
                kopf.warn(body, reason="KubernetesApiError", message=str(exc))
                self.api_error = str(exc)
            return polling_interval(body.spec)
        self.api_error = ""
        return outcome.polling_interval

    async def _poll(self, body: kopf.Body) -> Outcome:
        spec = dict(body.spec)
        target_name = str((spec.get("scaleTargetRef") or {}).get("name") or "")
        deployment = await self.runtime.kube.get(self.deployment_path(target_name)) if target_name else None
        load, load_error = await self._read_load(spec.get("queues") or None)
        outcome = reconcile(
            Observation(
                spec=spec,
                annotations=dict(body.metadata.annotations),
                status=self.status if self.status is not None else dict(body.status),
                generation=body.metadata.get("generation"),
                target=None if deployment is None else Target.from_deployment(deployment),
                load=load,
                load_error=load_error,
            )
        )
        if outcome.scale_to is not None and deployment is not None:
            await self._scale(target_name, deployment, outcome.scale_to)
            if outcome.direction is not Direction.NONE:
                self.metrics.scale_events.labels(*self.labels, outcome.direction.value).inc()
        for event in outcome.events:
            level = logging.WARNING if event.type == "Warning" else logging.INFO
            log.log(level, "%s: %s", event.reason, event.message, extra={"kv": self.kv})
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        if outcome.status != self.status:
            await self.runtime.kube.merge_patch(f"{self.path}/status", {"status": outcome.status})
            self.status = outcome.status
        self._export(outcome, load)
        return outcome

    async def _read_load(self, queues: list[str] | None) -> tuple[int | None, str]:
        reader = self.runtime.reader
        assert reader is not None
        try:
            return await asyncio.to_thread(reader.read, queues), ""
        except LoadUnavailableError as exc:
            self.metrics.database_errors.labels(*self.labels).inc()
            return None, str(exc)

    async def _scale(self, name: str, deployment: dict[str, Any], replicas: int) -> None:
        """Set the replicas and the annotation that says the autoscaler set them, in one patch.

        The resourceVersion makes it fail (409) rather than overwrite a change made since the
        read; the next poll then sees that change.
        """
        meta = deployment.get("metadata") or {}
        patch: dict[str, Any] = {
            "metadata": {"annotations": {SCALED_REPLICAS_ANNOTATION: str(replicas)}},
            "spec": {"replicas": replicas},
        }
        if meta.get("resourceVersion"):
            patch["metadata"]["resourceVersion"] = meta["resourceVersion"]
        await self.runtime.kube.merge_patch(self.deployment_path(name), patch)

    def _export(self, outcome: Outcome, load: int | None) -> None:
        metrics = self.metrics
        status = outcome.status
        if status.get("desiredReplicas") is not None:
            metrics.desired.labels(*self.labels).set(status["desiredReplicas"])
        if status.get("currentReplicas") is not None:
            metrics.current.labels(*self.labels).set(status["currentReplicas"])
        if load is not None:
            metrics.load.labels(*self.labels).set(load)
        metrics.paused.labels(*self.labels).set(1 if outcome.condition("Paused") == "True" else 0)
        metrics.manual_override.labels(*self.labels).set(
            1 if outcome.condition("ManualOverride") == "True" else 0
        )
        metrics.fallback.labels(*self.labels).set(1 if outcome.condition("Fallback") == "True" else 0)

    def forget_metrics(self) -> None:
        """A deleted autoscaler leaves no stale series behind."""
        metrics = self.runtime.metrics
        if metrics is None:
            return
        for metric in (*metrics.series(), metrics.database_errors):
            with contextlib.suppress(KeyError):  # never set for this autoscaler
                metric.remove(*self.labels)
        for direction in (Direction.UP, Direction.DOWN):
            with contextlib.suppress(KeyError):
                metrics.scale_events.remove(*self.labels, direction.value)


def run_operator(config: OperatorConfig) -> int:
    """Run until SIGTERM or SIGINT (kopf handles both and stops gracefully); exit code 0.

    kopf retries failed API requests, then gives up by raising its own (private) error or
    aiohttp's: that is a ClusterUnavailableError, one line. Anything else is a bug and keeps
    its traceback.
    """
    try:
        with contextlib.suppress(asyncio.CancelledError):  # as kopf.run
            asyncio.run(_operate(config))
    except Exception as exc:
        if not is_api_failure(exc):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ClusterUnavailableError(
            f"the operator stopped: a Kubernetes API request failed: {message}"
        ) from None
    return 0


async def _operate(config: OperatorConfig) -> None:
    asyncio.get_running_loop().set_exception_handler(quiet_api_failures)
    port = config.operator.liveness_port
    await kopf.operator(
        standalone=True,
        clusterwide=not config.operator.namespaces,
        namespaces=config.operator.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{port}/healthz" if port else None,
        memo=kopf.Memo(passito_config=config),
    )
