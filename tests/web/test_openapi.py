"""The OpenAPI document fuzzed with schemathesis against a running `passito-jobs web`: no response
is a server error, every response matches the document (status, content type, body schema), and
input the document rules out is refused with a 4xx. Bounded: a fixed number of cases per
operation, each answered within the request timeout."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from psycopg.types.json import Jsonb

from passito_jobs.web import openapi
from tests.conftest import drop_database, fresh_database
from tests.web.conftest import Server, insert_job, start_server, stop_server

schema = schemathesis.openapi.from_dict(openapi.document())
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
    max_examples=30,
)
CASES = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def fuzzed_server(
    pg_admin_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server for every case, on a database with jobs in every state."""
    url = fresh_database(pg_admin_url)
    with psycopg.connect(url, autocommit=True) as conn:
        parent = insert_job(conn, state="completed", payload=Jsonb({"outpass_id": "1", "student_name": "A"}))
        for state in ("failed", "cancelled", "pending", "blocked", "processing", "completed"):
            for _ in range(3):
                insert_job(
                    conn,
                    state=state,
                    queue="emails",
                    depends_on=[parent],
                    worker_id="w:1" if state == "processing" else None,
                    heartbeat_at="now()" if state == "processing" else None,
                    last_error="boom\nTraceback" if state == "failed" else None,
                )
    folder: Path = tmp_path_factory.mktemp("openapi")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env.update({"PASSITO_DATABASE_URL": url, "PYTHONPATH": str(Path(__file__).parents[2])})
    server = start_server(env, folder / "web.log")
    try:
        yield server
    finally:
        stop_server(server)
        assert "Traceback" not in server.log(), server.log()
        drop_database(pg_admin_url, url)


# Some rules cannot be written in the document (a cursor must come from a previous page, a time
# range must not be empty, times lie within 1970-9999): such schema-valid input gets a 400 with
# a message, so the "schema-valid input is accepted" check does not apply; every other does.
NOT_EXPRESSIBLE = [schemathesis.checks.positive_data_acceptance]


@schema.parametrize()
@CASES
def test_the_api_keeps_its_document(case: Any, fuzzed_server: Server) -> None:
    case.call_and_validate(base_url=fuzzed_server.url, timeout=30, excluded_checks=NOT_EXPRESSIBLE)
