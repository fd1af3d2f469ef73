"""Log lines keep the old `[Worker host:pid][TAG]` shape with key=value fields, or are JSON."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from passito_jobs import logs
from passito_jobs.logs import JsonFormatter, TextFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("passito_jobs.worker", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_text_lines() -> None:
    fmt = TextFormatter("Worker", "pod-1:42")
    assert (
        fmt.format(record("Processing Job #12 (GenerateQrCode)"))
        == "[Worker pod-1:42][INFO] Processing Job #12 (GenerateQrCode)"
    )
    line = fmt.format(record("Completed Job #12 (X) in 35 ms", tag="DONE", kv={"queue": "a b", "n": 1}))
    assert line == '[Worker pod-1:42][DONE] Completed Job #12 (X) in 35 ms queue="a b" n=1'


def test_json_lines() -> None:
    data = json.loads(JsonFormatter("Worker", "pod-1:42").format(record("hello", tag="FAIL", job_id=3)))
    assert {k: data[k] for k in ("level", "tag", "worker_id", "message", "job_id")} == {
        "level": "info",
        "tag": "FAIL",
        "worker_id": "pod-1:42",
        "message": "hello",
        "job_id": 3,
    }


def test_every_job_line_carries_the_job_and_the_worker() -> None:
    from passito_jobs.logs import job_fields

    job = job_fields(12, "GenerateQrCode", "outpasses", "1/3", "pod-1:42")
    line = TextFormatter("Worker", "pod-1:42").format(record("Processing Job #12 (GenerateQrCode)", job=job))
    assert line == (
        "[Worker pod-1:42][INFO] Processing Job #12 (GenerateQrCode) "
        "job_id=12 job_type=GenerateQrCode queue=outpasses attempt=1/3 worker_id=pod-1:42"
    )
    data = json.loads(JsonFormatter("Worker", "pod-1:42").format(record("Processing", job=job)))
    assert {k: data[k] for k in ("job_id", "job_type", "queue", "attempt", "worker_id")} == {
        "job_id": 12,
        "job_type": "GenerateQrCode",
        "queue": "outpasses",
        "attempt": "1/3",
        "worker_id": "pod-1:42",
    }


def test_a_job_with_a_trace_context_logs_its_trace_id_without_opentelemetry() -> None:
    """The trace id comes from the job's traceparent even in a worker that does not trace; a
    malformed or all-zero traceparent gives none."""
    from passito_jobs.logs import job_fields
    from passito_jobs.tracing import trace_id_of

    trace_id = trace_id_of({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert trace_id_of({"traceparent": "00-" + "0" * 32 + "-b7ad6b7169203331-01"}) is None
    assert trace_id_of({"traceparent": 7}) is None
    assert trace_id_of(None) is None
    job = job_fields(12, "Noop", "default", "1/3", "pod-1:42", trace_id=trace_id)
    data = json.loads(JsonFormatter("Worker", "pod-1:42").format(record("Processing", job=job)))
    assert data["trace_id"] == trace_id
    plain = json.loads(
        JsonFormatter("Worker", "pod-1:42").format(
            record("Processing", job=job_fields(12, "Noop", "default", "1/3", "pod-1:42"))
        )
    )
    assert "trace_id" not in plain


def test_a_line_logged_inside_a_span_carries_its_trace_id() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("attempt") as span:
        data = json.loads(JsonFormatter("Worker", "pod-1:42").format(record("wrote the email", job_id=3)))
    assert data["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    outside = json.loads(JsonFormatter("Worker", "pod-1:42").format(record("idle")))
    assert "trace_id" not in outside


def _failed(name: str, message: str) -> logging.LogRecord:
    try:
        raise ConnectionError("404 page not found")
    except ConnectionError:
        info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, (), info)


def test_a_third_party_traceback_is_one_line_unless_debug() -> None:
    """kopf's "Resource observer has failed" is one line; our own errors keep their traceback,
    and PASSITO_LOG_LEVEL=DEBUG (tracebacks=True) shows everyone's."""
    quiet = TextFormatter("Operator", "op:1")
    line = quiet.format(_failed("kopf.objects", "Resource observer has failed: 404 page not found"))
    assert line == "[Operator op:1][ERROR] Resource observer has failed: 404 page not found"
    line = quiet.format(_failed("asyncio", "Task exception was never retrieved"))
    assert (
        line
        == "[Operator op:1][ERROR] Task exception was never retrieved: ConnectionError: 404 page not found"
    )
    assert "Traceback" in quiet.format(_failed("passito_jobs.worker", "Unexpected error"))
    assert "Traceback" in TextFormatter("Operator", "op:1", tracebacks=True).format(_failed("kopf", "failed"))
    data = json.loads(JsonFormatter("Operator", "op:1").format(_failed("aiohttp.client", "failed")))
    assert data["exception"] == "ConnectionError: 404 page not found"


def test_weasyprints_per_font_notice_without_the_subsetter_is_dropped_and_its_other_warnings_pass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without libharfbuzz-subset0 WeasyPrint warns once per font of every PDF (a demo printed
    thousands of them); that one message is dropped, by logger and text, nothing else."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        logs.setup(role="Worker", instance="host:1")
        logs.setup(role="Worker", instance="host:1")  # idempotent: one filter
        weasyprint = logging.getLogger("weasyprint")
        weasyprint.warning(
            'Using fontTools instead of HarfBuzz-Subset for font "%s". This will be unsupported',
            "DejaVu Sans",
        )
        weasyprint.warning("Ignored `color: nope` at 1:1, invalid value.")
        logging.getLogger("passito_jobs.worker").warning("Using fontTools instead of HarfBuzz-Subset: ours")
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert 'for font "DejaVu Sans"' not in err
    assert "Ignored `color: nope` at 1:1, invalid value." in err
    assert "HarfBuzz-Subset: ours" in err
    assert (
        sum(isinstance(f, type(logs._SUBSETTER_NOTICE)) for f in logging.getLogger("weasyprint").filters) == 1
    )
