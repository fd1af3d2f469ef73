"""OpenTelemetry: an outpass flow dispatched inside a span is run by a real worker process, whose
attempt spans reach a real OTLP/HTTP receiver (protobuf decoded with opentelemetry-proto) as one
trace with the dispatcher's span as parent and link; a failed attempt carries the error."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from passito_jobs import dispatch
from passito_jobs.outpass.flow import dispatch_outpass_flow
from passito_jobs.tracing import Tracing, TracingConfigError, exporter_names
from tests.helpers import WorkerProcess, count_states, run_cli, wait_for
from tests.outpasses import sample_payload

Conn = psycopg.Connection[Any]


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback: POST /v1/traces with an ExportTraceServiceRequest."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.requests.append(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) of every span received."""
        with self.lock:
            found = []
            for request in self.requests:
                for resource_spans in request.resource_spans:
                    resource = attributes(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        found.extend((resource, span) for span in scope_spans.spans)
            return found


def attributes(values: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for kv in values:
        kind = kv.value.WhichOneof("value")
        found[kv.key] = getattr(kv.value, kind) if kind else None
    return found


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    found = OtlpReceiver()
    found.thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


def test_a_flow_dispatched_in_a_span_is_one_trace_of_attempt_spans(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path, receiver: OtlpReceiver
) -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracer = provider.get_tracer("passito-app")
    with tracer.start_as_current_span("POST /outpasses") as request_span:
        flow = dispatch_outpass_flow(sample_payload(outpass_id=4711, needs_parent_approval=False), conn=conn)
        refused = dispatch("AlwaysPermanent", conn=conn)
    untraced = dispatch("Noop", conn=conn)  # outside any span: no trace context stored
    conn.commit()
    request = request_span.get_span_context()
    trace_id, parent_id = f"{request.trace_id:032x}", f"{request.span_id:016x}"
    stored = conn.execute(
        "SELECT metadata FROM passito_jobs.jobs WHERE id = ANY(%s) ORDER BY id", ([*flow.job_ids, refused],)
    ).fetchall()
    # version 00, the trace, the parent span, and flags (sampled; newer SDKs add "random trace id")
    assert {row[0]["traceparent"][:-2] for row in stored} == {f"00-{trace_id}-{parent_id}-"}

    env = {
        **cli_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_SERVICE_NAME": "passito-test-worker",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "PASSITO_LOG_FORMAT": "json",
    }
    worker = WorkerProcess(env, tmp_path / "worker.log", "--import", "passito_jobs.outpass")
    try:
        wait_for(
            lambda: count_states(conn) == {"completed": 4, "failed": 1},
            timeout=90,
            message="the flow's 3 jobs and the Noop completed, AlwaysPermanent failed",
        )
        wait_for(lambda: len(receiver.spans()) >= 5, timeout=60, message="5 attempt spans exported")
    finally:
        assert worker.stop() == 0, worker.log()

    spans = {
        int(attributes(span.attributes)["messaging.message.id"]): (res, span)
        for res, span in receiver.spans()
    }
    assert set(spans) == {*flow.job_ids, refused, untraced}
    for job_id in [*flow.job_ids, refused]:
        resource, span = spans[job_id]
        assert resource["service.name"] == "passito-test-worker"
        assert span.trace_id.hex() == trace_id
        assert span.parent_span_id.hex() == parent_id
        assert [(link.trace_id.hex(), link.span_id.hex()) for link in span.links] == [(trace_id, parent_id)]
        assert span.kind == span.SPAN_KIND_CONSUMER
        found = attributes(span.attributes)
        assert found["messaging.system"] == "passito_jobs"
        assert found["messaging.operation.type"] == "process"
        assert found["passito_jobs.job.attempt"] == 1
        assert found["passito_jobs.worker.id"].endswith(f":{worker.pid}")
    qr = attributes(spans[flow.qr_code][1].attributes)
    assert (qr["passito_jobs.job.type"], qr["messaging.destination.name"]) == ("GenerateQrCode", "outpasses")
    assert qr["passito_jobs.job.outcome"] == "completed"
    assert spans[flow.qr_code][1].name == "process outpasses"

    failed = spans[refused][1]
    assert attributes(failed.attributes)["passito_jobs.job.outcome"] == "failed"
    assert attributes(failed.attributes)["error.type"] == "PermanentError"
    assert failed.status.code == failed.status.STATUS_CODE_ERROR
    events = [(event.name, attributes(event.attributes)) for event in failed.events]
    assert [name for name, _ in events] == ["exception"]
    assert events[0][1]["exception.type"].endswith("PermanentError")
    assert "retrying will not help" in events[0][1]["exception.message"]

    # A job dispatched outside a span starts a trace of its own, with no parent and no link.
    alone = spans[untraced][1]
    assert alone.trace_id.hex() != trace_id
    assert (alone.parent_span_id, list(alone.links)) == (b"", [])

    # The worker's JSON log lines about a job carry its trace id, the handler's own lines too (the
    # outpass email's "wrote the email to ..."); an untraced job's lines carry the trace its span began.
    lines = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    traced = {line.get("trace_id") for line in lines if line.get("job_id") in flow.job_ids}
    assert traced == {trace_id}
    assert {line.get("trace_id") for line in lines if line.get("job_id") == untraced} == {
        alone.trace_id.hex()
    }


def test_without_an_exporter_the_worker_traces_nothing() -> None:
    assert exporter_names({}) == []
    assert Tracing.from_env("w:1", {}) is None
    assert Tracing.from_env("w:1", {"OTEL_TRACES_EXPORTER": "none"}) is None
    assert Tracing.from_env("w:1", {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is None
    assert exporter_names({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}) == [
        "otlp"
    ]
    assert exporter_names({"OTEL_TRACES_EXPORTER": "otlp, console"}) == ["otlp", "console"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "zipkin\x1b[31m"},
            "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin\\x1b[31m'",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' is not supported",
        ),
    ],
)
def test_a_bad_otel_setting_stops_the_worker_with_one_line(
    cli_env: dict[str, str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(TracingConfigError, match="OTEL_"):
        Tracing.from_env("w:1", env)
    done = run_cli(["worker"], {**cli_env, **env})
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    assert message in lines[-1], done.stderr


def test_without_opentelemetry_in_use_nothing_of_it_is_loaded() -> None:
    """Dispatch and a worker without OTEL_* variables never import OpenTelemetry: the cost of the
    feature when it is off is a dictionary lookup per dispatch and a None test per attempt."""
    import subprocess
    import sys

    code = (
        "import sys, passito_jobs\n"
        "from passito_jobs.queue.dispatch import defaults\n"
        "from passito_jobs.tracing import Tracing\n"
        "from passito_jobs.worker.runtime import Worker\n"
        "assert defaults.trace_context() is None and Tracing.from_env('w:1', {}) is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_a_dead_collector_does_not_hold_a_stopping_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from passito_jobs.queue.models import ClaimedJob
    from tests.helpers import free_port, wait_for

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nobody listens
    # The exporter retries for this long (10 s by default) with jitter from the global `random`,
    # in a thread the test must not leave behind: a later test's hypothesis draws would see the
    # global random state change under them and fail.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    tracing = Tracing.from_env("w:1")
    assert tracing is not None
    Tracing.end(tracing.start(ClaimedJob(1, "default", "Noop", {}, 0, 1, 3, 0.0)), "completed")
    started = time.monotonic()
    tracing.shutdown(timeout=0.5)
    assert time.monotonic() - started < 3  # the exporter alone retries for seconds
    wait_for(
        lambda: not any(t.name == "otel-shutdown" for t in threading.enumerate()),
        timeout=60,
        message="the export in the background gave up",
    )
