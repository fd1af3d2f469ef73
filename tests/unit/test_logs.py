"""Log lines keep the old `[Worker host:pid][TAG]` shape with key=value fields, or are JSON."""

from __future__ import annotations

import json
import logging

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
