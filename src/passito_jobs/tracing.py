"""OpenTelemetry traces: the trace context goes with each job, and each attempt is a span.

Optional (`pip install 'passito-jobs[otel]'`) and configured only by the standard `OTEL_*`
variables. Two halves:

- **dispatch** stores the caller's trace context (`traceparent`, `tracestate`) in the job's
  metadata when the caller is inside a span (`current_trace_context`, installed as
  `queue.dispatch.defaults.trace_context`). A process that never loaded OpenTelemetry has no span
  to pass on: the check is one dictionary lookup. The PHP app passes its own `traceparent` in
  the SQL function's `metadata`.
- **the worker** (`Tracing.from_env`) makes one span per attempt, `process <queue>` (kind
  CONSUMER, messaging semantic conventions), whose parent is the dispatcher's span and which
  links to it too, with the job's id (`messaging.message.id`), queue
  (`messaging.destination.name`), type, attempt, worker id and outcome, and the exception of a
  failed attempt. Tracing is on when an exporter is configured
  (`OTEL_TRACES_EXPORTER`, or an `OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT` for the default `otlp`);
  otherwise `from_env` returns None and the worker's hot path does nothing more than test for it.

Sampling (`OTEL_TRACES_SAMPLER`), batching (`OTEL_BSP_*`), the service name (`OTEL_SERVICE_NAME`,
default `passito-jobs-worker`) and the OTLP endpoint, headers and timeout are the SDK's own
readings of the same variables.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from passito_jobs.queue.models import ClaimedJob

log = logging.getLogger("passito_jobs.worker")

DEFAULT_SERVICE_NAME = "passito-jobs-worker"
MESSAGING_SYSTEM = "passito_jobs"
TRACE_KEYS = ("traceparent", "tracestate")
SHUTDOWN_TIMEOUT = 3.0  # seconds a stopping worker waits for its last spans to be exported


class TracingConfigError(ValueError):
    """An OTEL_* variable asks for something this worker cannot do; the message says which."""


def current_trace_context() -> dict[str, str] | None:
    """The W3C trace context of the caller's current span, or None outside a valid span."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:  # nobody in this process loaded OpenTelemetry: there is no span
        return None
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return {key: carrier[key] for key in TRACE_KEYS if key in carrier} or None


def current_trace_id() -> str | None:
    """The trace id of the current span (32 hex digits), or None; free without OpenTelemetry."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def trace_id_of(metadata: Mapping[str, Any] | None) -> str | None:
    """The trace id in a job's `traceparent` (for log lines), without OpenTelemetry."""
    if not metadata:
        return None
    parent = metadata.get("traceparent")
    if not isinstance(parent, str) or len(parent) != 55:
        return None
    trace_id = parent[3:35]
    return None if trace_id == "0" * 32 else trace_id


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415 - only when tracing
        TraceContextTextMapPropagator,
    )

    return TraceContextTextMapPropagator()


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the OTEL_* variables ask for ([] when none: tracing stays off)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    return [] if names == ["none"] else [n for n in names if n != "none"]


class Tracing:
    """The worker's spans: one per attempt (`start`, `failed`, `end`)."""

    def __init__(self, provider: TracerProvider, worker_id: str) -> None:
        from opentelemetry import trace  # noqa: PLC0415

        self.provider = provider
        self.worker_id = worker_id
        self._tracer: Tracer = provider.get_tracer("passito_jobs.worker")
        self._propagator = _propagator()
        self._trace = trace

    @classmethod
    def from_env(cls, worker_id: str, environ: Mapping[str, str] | None = None) -> Tracing | None:
        """Tracing as the OTEL_* variables configure it, or None when no exporter is configured
        (`environ` decides that; the SDK's parts read their own settings from os.environ).
        Raises TracingConfigError when one is asked for that cannot be made (the `otel` extra is
        not installed, an unknown exporter name, OTLP over gRPC without its exporter)."""
        env = os.environ if environ is None else environ
        names = exporter_names(env)
        if not names:
            return None
        try:
            from opentelemetry import trace  # noqa: PLC0415
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
        except ImportError:
            raise TracingConfigError(
                "OTEL_* variables ask for traces, but OpenTelemetry is not installed: "
                "pip install 'passito-jobs[otel]'"
            ) from None
        attributes = {"service.instance.id": worker_id}
        if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get(
            "OTEL_RESOURCE_ATTRIBUTES", ""
        ):
            attributes["service.name"] = DEFAULT_SERVICE_NAME
        provider = TracerProvider(resource=Resource.create(attributes))
        for name in names:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
        # Handlers that make spans of their own (trace.get_tracer(...)) export them here too.
        trace.set_tracer_provider(provider)
        return cls(provider, worker_id)

    def start(self, job: ClaimedJob) -> Span:
        """The span of one attempt, a child of the dispatcher's span and linked to it."""
        from opentelemetry.context import Context  # noqa: PLC0415
        from opentelemetry.trace import Link, SpanKind  # noqa: PLC0415

        parent = Context()  # not the claim loop's context: a job without a trace starts its own
        links = []
        if job.metadata and "traceparent" in job.metadata:
            carrier = {k: v for k in TRACE_KEYS if isinstance(v := job.metadata.get(k), str)}
            extracted = self._propagator.extract(carrier)
            dispatched = self._trace.get_current_span(extracted).get_span_context()
            if dispatched.is_valid:
                parent = extracted
                links.append(Link(dispatched, {"passito_jobs.link": "dispatch"}))
        return self._tracer.start_span(
            f"process {job.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            # The job id and queue by their messaging names; each attribute costs ~10 us in the SDK.
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "process",
                "messaging.destination.name": job.queue,
                "messaging.message.id": str(job.id),
                "passito_jobs.job.type": job.type,
                "passito_jobs.job.attempt": job.attempt,
                "passito_jobs.worker.id": self.worker_id,
            },
        )

    def enter(self, span: Span) -> None:
        """Make `span` current in the running task's context (each attempt's task has its own
        copy, which ends with it): the handler's own spans and dispatches join its trace."""
        from opentelemetry import context  # noqa: PLC0415

        context.attach(self._trace.set_span_in_context(span))

    @staticmethod
    def trace_id(span: Span) -> str:
        return format(span.get_span_context().trace_id, "032x")

    @staticmethod
    def failed(span: Span, exc: BaseException, description: str) -> None:
        """A failed attempt: the exception as an event, the span's status an error."""
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        span.record_exception(exc, escaped=True)
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, description))

    @staticmethod
    def end(span: Span, outcome: str) -> None:
        span.set_attribute("passito_jobs.job.outcome", outcome)
        span.end()

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Export what is buffered and stop, for at most `timeout` seconds: an unreachable
        collector (the exporter retries for seconds) must not hold the worker past its grace
        period. The export goes on in a daemon thread, which the process's exit ends."""

        def stop() -> None:
            try:
                self.provider.shutdown()
            except Exception as exc:
                log.warning("Could not export the last spans: %s", exc)

        exporting = threading.Thread(target=stop, name="otel-shutdown", daemon=True)
        exporting.start()
        exporting.join(timeout)
        if exporting.is_alive():
            log.warning("The last spans were not exported within %gs; the collector may be down", timeout)


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        return ConsoleSpanExporter(out=sys.stderr)
    if name != "otlp":
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (use otlp, console or none)"
        )
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        try:  # not part of the extra (it pulls in grpcio): by name, if the user installed it
            grpc = importlib.import_module("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
        except ImportError:
            raise TracingConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc; "
                "the otel extra sends http/protobuf"
            ) from None
        return grpc.OTLPSpanExporter()
    if protocol != "http/protobuf":
        raise TracingConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported (use http/protobuf or grpc)"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    return OTLPSpanExporter()
