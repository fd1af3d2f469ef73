"""The outpass flow end to end: one-transaction dispatch, real worker processes, the CLI."""

from __future__ import annotations

import email
import email.policy
import json
import os
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pypdf import PdfReader

from passito_jobs import dispatch, dispatch_many
from passito_jobs.outpass import flow as flow_module
from passito_jobs.outpass.flow import dispatch_outpass_flow, dispatch_outpass_flows
from passito_jobs.outpass.model import InvalidOutpassError
from passito_jobs.queue.store import Store
from tests.helpers import WorkerProcess, count_states, job_state, run_cli, wait_for
from tests.outpasses import sample_payload

Conn = psycopg.Connection[Any]

OUTPASS = ("--import", "passito_jobs.outpass")  # the plug-in: workers load it as a job module


def jobs(conn: Conn) -> dict[int, tuple[str, str, str, list[int]]]:
    rows = conn.execute("SELECT id, type, state::text, queue, depends_on FROM passito_jobs.jobs ORDER BY id")
    return {row[0]: (row[1], row[2], row[3], list(row[4] or [])) for row in rows}


def test_the_flow_is_dispatched_with_its_dependencies(conn: Conn) -> None:
    flow = dispatch_outpass_flow(sample_payload(), conn=conn)
    assert jobs(conn) == {
        flow.qr_code: ("GenerateQrCode", "pending", "outpasses", []),
        flow.parent_approval: ("SendParentApproval", "pending", "emails", []),
        flow.pdf: ("GenerateOutpassPdf", "blocked", "outpasses", [flow.qr_code]),
        flow.student_email: ("SendOutpassEmail", "blocked", "emails", [flow.pdf]),
    }
    priorities = dict(conn.execute("SELECT id, priority FROM passito_jobs.jobs").fetchall())
    # Later steps first: a burst of outpasses finishes the flows it started before new ones.
    assert [priorities[i] for i in (flow.qr_code, flow.pdf, flow.student_email, flow.parent_approval)] == [
        0,
        1,
        2,
        2,
    ]
    payload = conn.execute("SELECT payload FROM passito_jobs.jobs WHERE id = %s", (flow.pdf,)).fetchone()
    assert payload is not None
    assert payload[0]["outpass_id"] == "42"
    assert payload[0]["from_date"] == "2025-03-01T09:00:00+05:30"


def test_every_job_of_a_flow_is_tagged_with_its_outpass_and_hostel(conn: Conn) -> None:
    flow = dispatch_outpass_flow(sample_payload(outpass_id=4711, hostel="Ganga"), conn=conn)
    dispatch_outpass_flow(sample_payload(outpass_id=4712, hostel="Kaveri"), conn=conn)
    store = Store(conn)
    assert sorted(job.id for job in store.list_jobs(tag="outpass:4711")) == sorted(flow.job_ids)
    assert {tuple(job.tags) for job in store.list_jobs(tag="hostel:ganga")} == {
        ("outpass:4711", "hostel:ganga")
    }
    assert len(store.list_jobs(tag="hostel:kaveri")) == 4


def test_no_parent_approval_job_unless_the_outpass_needs_it(conn: Conn) -> None:
    flow = dispatch_outpass_flow(sample_payload(needs_parent_approval=False), conn=conn)
    assert flow.parent_approval is None
    assert [t for t, *_ in jobs(conn).values()] == [
        "GenerateQrCode",
        "GenerateOutpassPdf",
        "SendOutpassEmail",
    ]


def test_the_flow_joins_the_callers_transaction(database_url: str, conn: Conn) -> None:
    with psycopg.connect(database_url) as own:  # not autocommit: the caller's transaction
        dispatch_outpass_flows([sample_payload(outpass_id=1), sample_payload(outpass_id=2)], conn=own)
        assert len(jobs(own)) == 8
        own.rollback()
    assert jobs(conn) == {}


def test_a_failure_half_way_leaves_no_job_behind(conn: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The QR jobs are written, then dispatching the PDFs breaks (here: the connection drops,
    simulated by failing the second batch): the QR jobs must be rolled back with it."""
    calls = []

    def breaks_second_time(requests: Any, *, conn: Conn) -> list[int]:
        calls.append(len(requests))
        if len(calls) == 2:
            raise psycopg.OperationalError("connection lost")
        return dispatch_many(requests, conn=conn)

    monkeypatch.setattr(flow_module, "dispatch_many", breaks_second_time)
    with pytest.raises(psycopg.OperationalError):
        dispatch_outpass_flow(sample_payload(), conn=conn)
    assert calls == [2, 1]  # QR code and parent approval went in first
    assert jobs(conn) == {}


def test_a_bad_outpass_dispatches_nothing(conn: Conn) -> None:
    with pytest.raises(InvalidOutpassError, match="outpass 1: field 'student_email' is not a valid email"):
        dispatch_outpass_flows([sample_payload(), sample_payload(student_email="nope")], conn=conn)
    assert jobs(conn) == {}


def test_without_conn_the_flow_uses_the_database_url(
    database_url: str, conn: Conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PASSITO_DATABASE_URL", database_url)
    flow = dispatch_outpass_flow(sample_payload())
    assert sorted(jobs(conn)) == sorted(flow.job_ids)


@pytest.mark.slow
def test_outpasses_flow_through_two_real_workers(conn: Conn, cli_env: dict[str, str], tmp_path: Path) -> None:
    storage = Path(cli_env["PASSITO_STORAGE_DIR"])
    flows = dispatch_outpass_flows(
        [
            sample_payload(outpass_id=1),
            sample_payload(outpass_id=2, needs_parent_approval=False, student_name="Kabir Khan"),
            sample_payload(outpass_id="hostel-b-3", needs_parent_approval=False),
        ],
        conn=conn,
    )
    # A payload that is wrong fails at once, without retries, naming the field.
    bad = dispatch("GenerateQrCode", {**sample_payload(), "to_date": "2025-02-01"}, conn=conn)
    workers = [
        WorkerProcess(cli_env, tmp_path / f"w{i}.log", *OUTPASS, "--concurrency", "4") for i in range(2)
    ]
    try:
        wait_for(
            lambda: count_states(conn) == {"completed": 10, "failed": 1},
            timeout=60,
            message="10 completed jobs and 1 failed",
        )
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0], [w.log() for w in workers]

    state, attempts, error = conn.execute(
        "SELECT state::text, attempts, last_error FROM passito_jobs.jobs WHERE id = %s", (bad,)
    ).fetchone() or ("", 0, "")
    assert (state, attempts) == ("failed", 1)
    assert error.startswith("InvalidOutpassError: to_date (2025-02-01) is before from_date")

    for flow in flows:
        folder = storage / "outpasses" / flow.outpass_id
        assert (folder / "qr.png").read_bytes().startswith(b"\x89PNG")
        text = PdfReader(folder / "outpass.pdf").pages[0].extract_text()
        assert "Sat 1 Mar 2025, 09:00 UTC+05:30" in text
    assert "Kabir Khan" in PdfReader(storage / "outpasses/2/outpass.pdf").pages[0].extract_text()

    results = dict(
        conn.execute("SELECT id, result FROM passito_jobs.jobs WHERE type LIKE 'Send%'").fetchall()
    )
    assert len(results) == 4
    outbox = sorted((storage / "outbox").iterdir())
    assert sorted(storage / r["file"] for r in results.values()) == outbox
    for flow in flows:
        message = email.message_from_bytes(
            (storage / results[flow.student_email]["file"]).read_bytes(), policy=email.policy.default
        )
        [attachment] = message.iter_attachments()  # type: ignore[attr-defined]
        pdf = (storage / "outpasses" / flow.outpass_id / "outpass.pdf").read_bytes()
        assert attachment.get_content() == pdf
    logs = "".join(w.log() for w in workers)
    assert "Processing Job #" in logs
    assert "(GenerateOutpassPdf)" in logs
    assert cli_env["PASSITO_SECRET_KEY"] not in logs


def test_a_worker_that_loads_the_outpass_jobs_refuses_to_start_without_a_secret_key(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "PASSITO_SECRET_KEY"}
    done = run_cli(["worker", *OUTPASS], env)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("passito-jobs: error: PASSITO_SECRET_KEY is not set")
    assert len(done.stderr.strip().splitlines()) == 1

    worker = WorkerProcess({**env, "PASSITO_INSECURE_DEV_SECRET": "true"}, tmp_path / "dev.log", *OUTPASS)
    try:
        wait_for(lambda: "Worker started" in worker.log(), message="the worker to start")
    finally:
        assert worker.stop() == 0
    assert "public development key and can be forged" in worker.log()


def test_outpass_dispatch_on_the_command_line(conn: Conn, cli_env: dict[str, str], tmp_path: Path) -> None:
    outpasses = [sample_payload(outpass_id=5), sample_payload(outpass_id=6, needs_parent_approval=False)]
    done = run_cli(["outpass", "dispatch", "--json", "-"], cli_env, input=json.dumps(outpasses))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["outpass 5", "outpass 6"]
    assert "SendParentApproval #" in lines[0]
    assert "SendParentApproval" not in lines[1]
    assert len(jobs(conn)) == 7

    single = tmp_path / "one.json"
    single.write_text(json.dumps(sample_payload(outpass_id=7)))
    assert run_cli(["outpass", "dispatch", "--json", str(single)], cli_env).returncode == 0
    assert len(jobs(conn)) == 11


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("{not json", "standard input is not valid JSON (Expecting property name"),
        (
            json.dumps([sample_payload(), sample_payload(outpass_id=None)]),
            "outpass 1: field 'outpass_id' is missing",
        ),
        (
            json.dumps(sample_payload(student_email="x@y")),
            "field 'student_email' is not a valid email address",
        ),
        ("[]", "no outpasses in the input"),
    ],
)
def test_outpass_dispatch_rejects_bad_input_in_one_line(
    conn: Conn, cli_env: dict[str, str], given: str, message: str
) -> None:
    done = run_cli(["outpass", "dispatch", "--json", "-"], cli_env, input=given)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert jobs(conn) == {}


def test_cleanup_expired_files_dispatches_and_a_worker_sweeps(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    storage = Path(cli_env["PASSITO_STORAGE_DIR"])
    old = storage / "outbox" / "old.eml"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x" * 123)
    stamp = time.time() - 31 * 86400
    os.utime(old, (stamp, stamp))

    started = time.monotonic()
    done = run_cli(["cleanup-expired-files"], cli_env)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 15  # it dispatches; it does not wait for the sweep
    job_id = int(done.stdout)
    again = run_cli(["cleanup-expired-files"], cli_env)
    assert int(again.stdout) == job_id  # one sweep at a time
    assert jobs(conn) == {job_id: ("CleanupExpiredFiles", "pending", "maintenance", [])}
    assert old.exists()

    worker = WorkerProcess(cli_env, tmp_path / "worker.log", *OUTPASS)
    try:
        wait_for(lambda: count_states(conn) == {"completed": 1}, message="the sweep to complete")
    finally:
        assert worker.stop() == 0
    row = conn.execute("SELECT result FROM passito_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    assert (row[0]["files_deleted"], row[0]["bytes_freed"], row[0]["dry_run"]) == (1, 123, False)
    assert row[0]["files"] == ["outbox/old.eml"]
    assert not old.exists()


def test_cleanup_with_other_options_than_the_pending_sweep_says_so_or_replaces_it(
    conn: Conn, cli_env: dict[str, str]
) -> None:
    first = run_cli(["cleanup-expired-files", "--dry-run"], cli_env)
    assert first.returncode == 0, first.stderr
    dry = int(first.stdout)

    other = run_cli(["cleanup-expired-files", "--retention-days", "1"], cli_env)
    assert (other.returncode, other.stdout) == (1, "")
    assert other.stderr.splitlines() == [
        f'passito-jobs: error: a cleanup sweep with other options is pending: #{dry} {{"dry_run": true}}; '
        "these options were not applied (--replace cancels it and dispatches this one)"
    ]
    assert run_cli(["cleanup-expired-files", "--dry-run"], cli_env).stdout.strip() == str(dry)  # same options

    replaced = run_cli(["cleanup-expired-files", "--retention-days", "1", "--replace"], cli_env)
    assert replaced.returncode == 0, replaced.stderr
    sweep = int(replaced.stdout)
    assert job_state(conn, dry) == "cancelled"
    assert jobs(conn)[sweep] == ("CleanupExpiredFiles", "pending", "maintenance", [])
    row = conn.execute("SELECT payload FROM passito_jobs.jobs WHERE id = %s", (sweep,)).fetchone()
    assert row == ({"dry_run": False, "retention_days": 1},)

    conn.execute("UPDATE passito_jobs.jobs SET state = 'processing', attempts = 1 WHERE id = %s", (sweep,))
    running = run_cli(["cleanup-expired-files", "--replace"], cli_env)
    assert running.returncode == 1
    assert running.stderr.splitlines() == [
        f'passito-jobs: error: cleanup sweep #{sweep} {{"dry_run": false, "retention_days": 1}} is already '
        "processing: wait for it to finish"
    ]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"outpass_id": "abc\n"}, "outpass_id"),
        ({"outpass_id": 10**80}, "outpass_id"),
        ({"student_name": "Aanya\u0085Bcc: all@example.org"}, "student_name"),
        ({"destination": "Chennai\u009b2J"}, "destination"),
        ({"hostel": "Kaveri\u2028"}, "hostel"),
        ({"parent_name": "Rohan\u200dSharma"}, "parent_name"),
        ({"to_date": "9999-12-31"}, "to_date"),
        ({"reason": "Wedding\u0000"}, "reason"),
    ],
)
def test_outpass_dispatch_refuses_hostile_values_in_one_line(
    conn: Conn, cli_env: dict[str, str], changes: dict[str, Any], field: str
) -> None:
    done = run_cli(
        ["outpass", "dispatch", "--json", "-"], cli_env, input=json.dumps(sample_payload(**changes))
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"passito-jobs: error: field '{field}' ")
    assert jobs(conn) == {}


@pytest.mark.slow
def test_a_hostile_payload_dispatched_directly_fails_once_naming_the_field(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    hostile = {
        ("GenerateQrCode", "outpass_id"): {"outpass_id": "abc\n"},
        ("GenerateQrCode", "to_date"): {"to_date": "9999-12-31"},
        ("GenerateOutpassPdf", "outpass_id"): {"outpass_id": 10**80},
        ("GenerateOutpassPdf", "destination"): {"destination": "Chennai\u009b2J"},
        ("SendOutpassEmail", "student_name"): {"student_name": "Aanya\u0085Bcc: all@example.org"},
        ("SendOutpassEmail", "room"): {"room": "214\u2028"},
        ("SendParentApproval", "parent_name"): {"parent_name": "Rohan\u200dSharma"},
        ("SendParentApproval", "from_date"): {"from_date": "0001-01-01"},
    }
    ids = {
        key: int(
            run_cli(["dispatch", key[0], "--payload", json.dumps(sample_payload(**changes))], cli_env).stdout
        )
        for key, changes in hostile.items()
    }
    worker = WorkerProcess(cli_env, tmp_path / "worker.log", *OUTPASS)
    try:
        wait_for(lambda: count_states(conn) == {"failed": len(ids)}, message="every hostile job failed")
    finally:
        assert worker.stop() == 0
    for (_, field), job_id in ids.items():
        state, attempts, error = conn.execute(
            "SELECT state::text, attempts, last_error FROM passito_jobs.jobs WHERE id = %s", (job_id,)
        ).fetchone() or ("", 0, "")
        assert (state, attempts) == ("failed", 1), error  # permanent: never retried
        assert error.startswith(f"InvalidOutpassError: field '{field}' "), error
    assert not (Path(cli_env["PASSITO_STORAGE_DIR"]) / "outpasses").exists()  # nothing was written
