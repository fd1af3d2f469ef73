"""Periodic jobs on a real PostgreSQL: exactly one job per slot across real workers and lease
handovers, the catch-up rules, the schedules table and `passito-jobs schedules`."""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from passito_jobs.queue.schedules import Schedule, run_round
from passito_jobs.queue.store import Store
from passito_jobs.registry import Registry
from tests.helpers import WorkerProcess, run_cli, wait_for

Conn = psycopg.Connection[Any]

FAST_LEASE = {
    # A dead leaseholder is replaced within about 3 s instead of 30.
    "PASSITO_MAINTENANCE_INTERVAL": "1s",
    "PASSITO_MAINTENANCE_LEASE_TTL": "3s",
    "PASSITO_HEARTBEAT_INTERVAL": "0.5s",
    "PASSITO_STUCK_AFTER": "5s",
}


def slots_of(conn: Conn, name: str) -> list[datetime]:
    """The slot of every job the schedule dispatched, from the jobs table (one per job)."""
    prefix = f"schedule:{name}:"
    rows = conn.execute(
        "SELECT unique_key FROM passito_jobs.jobs WHERE unique_key LIKE %s ORDER BY id", (prefix + "%",)
    ).fetchall()
    return [datetime.fromisoformat(str(r[0])[len(prefix) :]) for r in rows]


def holder_pid(conn: Conn) -> int | None:
    row = conn.execute(
        "SELECT worker_id FROM passito_jobs.leases WHERE name = 'maintenance' AND expires_at > now()"
    ).fetchone()
    return int(str(row[0]).rsplit(":", 1)[1]) if row else None


def schedules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "schedules.yaml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_every_slot_runs_once_while_the_leaseholder_is_killed_twice(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = schedules_file(tmp_path, "- {name: tick, type: Noop, every: 1s, catch_up: all}\n")
    env = {**cli_env, **FAST_LEASE, "PASSITO_SCHEDULES_FILE": str(path)}
    workers = [WorkerProcess(env, tmp_path / f"w{i}.log", "--no-log-jobs") for i in range(3)]
    started = len(workers)
    try:
        for _ in range(2):
            before = len(slots_of(conn, "tick"))
            wait_for(
                lambda b=before: len(slots_of(conn, "tick")) >= b + 8, timeout=90, message="8 more slots"
            )
            pid = wait_for(lambda: holder_pid(conn), timeout=30, message="a leaseholder")
            victim = next(w for w in workers if w.pid == pid)
            victim.kill()
            workers.remove(victim)
            started += 1
            workers.append(WorkerProcess(env, tmp_path / f"w{started}.log", "--no-log-jobs"))
            wait_for(
                lambda p=pid: holder_pid(conn) not in (None, p), timeout=60, message="another leaseholder"
            )
        before = len(slots_of(conn, "tick"))
        wait_for(lambda: len(slots_of(conn, "tick")) >= before + 8, timeout=90, message="8 more slots")
    finally:
        for worker in workers:
            worker.stop()
    slots = slots_of(conn, "tick")
    assert len(slots) >= 24
    assert len(set(slots)) == len(slots), "a slot was dispatched twice"
    ordered = sorted(slots)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert set(gaps) == {timedelta(seconds=1)}, (
        f"slots missing: {[g for g in gaps if g != timedelta(seconds=1)]}"
    )
    done = conn.execute(
        "SELECT count(*) FROM passito_jobs.jobs"
        " WHERE unique_key LIKE 'schedule:tick:%%' AND state = 'completed'"
    ).fetchone()
    assert done is not None
    assert done[0] >= len(slots) - 3


@pytest.mark.slow
def test_after_ten_missed_slots_latest_runs_one_none_none_and_all_ten(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    path = schedules_file(
        tmp_path,
        "schedules:\n"
        "  - {name: latest, type: Noop, every: 1s}\n"
        "  - {name: none, type: Noop, every: 1s, catch_up: none}\n"
        "  - {name: all, type: Noop, every: 1s, catch_up: all}\n",
    )
    env = {**cli_env, **FAST_LEASE, "PASSITO_SCHEDULES_FILE": str(path)}
    worker = WorkerProcess(env, tmp_path / "first.log", "--no-log-jobs")
    try:
        for name in ("latest", "none", "all"):
            wait_for(lambda n=name: len(slots_of(conn, n)) >= 2, timeout=60, message=f"{name} running")
    finally:
        assert worker.stop() == 0
    stopped = {name: max(slots_of(conn, name)) for name in ("latest", "none", "all")}
    # Ten slots pass with no worker at all.
    wait_for(
        lambda: conn.execute("SELECT now()").fetchone()[0] > max(stopped.values()) + timedelta(seconds=11),  # type: ignore[index]
        timeout=30,
        interval=0.2,
        message="ten slots without a worker",
    )
    worker = WorkerProcess(env, tmp_path / "second.log", "--no-log-jobs")
    try:
        for name in ("latest", "none", "all"):
            wait_for(
                lambda n=name: len([s for s in slots_of(conn, n) if s > stopped[n]]) >= 14,
                timeout=90,
                message=f"{name} on time again",
            )
    finally:
        assert worker.stop() == 0
    after = {name: sorted(s for s in slots_of(conn, name) if s > stopped[name]) for name in stopped}
    one = timedelta(seconds=1)
    # all: every slot of the gap ran, then every slot on time: no hole at all.
    assert after["all"][0] == stopped["all"] + one
    assert all(b - a == one for a, b in zip(after["all"], after["all"][1:], strict=False))
    # latest: one run for the whole gap (its latest slot), then on time; none: nothing for the gap.
    for name in ("latest", "none"):
        assert after[name][0] - stopped[name] > 10 * one, (name, after[name][0], stopped[name])
        assert all(b - a == one for a, b in zip(after[name], after[name][1:], strict=False)), name
    # The same rounds saw the same slots: latest ran the last missed one, which none skipped.
    assert after["none"][0] > after["latest"][0]
    for name in stopped:
        assert len(set(slots_of(conn, name))) == len(slots_of(conn, name))


def _aged(conn: Conn, name: str, seconds: float) -> None:
    """As if no worker had looked at the schedule for `seconds` (workers stopped)."""
    conn.execute(
        "UPDATE passito_jobs.schedules"
        " SET last_slot = date_trunc('second', now()) - make_interval(secs => %s),"
        " checked_at = now() - make_interval(secs => %s) WHERE name = %s",
        (seconds, seconds, name),
    )


@pytest.mark.parametrize(("catch_up", "expected"), [("latest", 1), ("none", 0), ("all", 10)])
def test_the_catch_up_rule_of_a_round(conn: Conn, store: Store, catch_up: str, expected: int) -> None:
    schedule = Schedule("s", "Noop", every=1.0, catch_up=catch_up)
    store.sync_schedules([schedule])
    _aged(conn, "s", 10.5)  # ten slots (or eleven, at a second's edge) came due meanwhile
    result = run_round(store, [schedule])
    dispatched = result.dispatched.get("s", [])
    due = len(dispatched) + result.skipped.get("s", 0)
    assert due in (10, 11)
    assert len(dispatched) == (due if catch_up == "all" else expected)
    assert run_round(store, [schedule]).dispatched.get("s", []) in (
        [],
        [dispatched[-1] + 1] if dispatched else [],
    )


def test_all_catches_up_at_most_the_latest_hundred_slots(conn: Conn, store: Store) -> None:
    schedule = Schedule("s", "Noop", every=1.0, catch_up="all")
    store.sync_schedules([schedule])
    _aged(conn, "s", 86400)
    result = run_round(store, [schedule])
    assert len(result.dispatched["s"]) == 100
    assert result.skipped["s"] >= 1  # older slots are not dispatched at all
    newest = max(slots_of(conn, "s"))
    assert datetime.now(UTC) - newest < timedelta(seconds=30)


def test_two_holders_racing_dispatch_each_slot_once(database_url: str, conn: Conn, store: Store) -> None:
    schedule = Schedule("race", "Noop", every=1.0, catch_up="all")
    store.sync_schedules([schedule])
    _aged(conn, "race", 30)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                barrier.wait()
                for _ in range(5):
                    run_round(Store(own), [schedule])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=holder) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    slots = slots_of(conn, "race")
    assert len(slots) >= 30
    assert len(set(slots)) == len(slots)


def test_paused_schedules_are_not_dispatched_and_removed_ones_are_stale(
    conn: Conn, store: Store, cli_env: dict[str, str]
) -> None:
    kept = Schedule("kept", "Noop", cron="*/5 * * * *", timezone="Europe/Berlin")
    gone = Schedule("gone", "Noop", every="1m")  # type: ignore[arg-type]
    store.sync_schedules([kept, gone])
    result = run_cli(["schedules", "pause", "kept"], cli_env)
    assert (result.returncode, result.stdout.strip()) == (0, "paused schedule kept")
    _aged(conn, "kept", 3600)
    assert run_round(store, [kept]).dispatched == {}
    store.sync_schedules([kept])  # a holder whose code no longer defines "gone"
    listed = run_cli(["schedules", "list"], cli_env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert lines["gone"].split()[1] == "stale"
    assert lines["kept"].split()[1] == "paused"
    assert "*/5 * * * * (Europe/Berlin)" in lines["kept"]
    assert run_cli(["schedules", "resume", "kept"], cli_env).returncode == 0
    assert len(run_round(store, [kept]).dispatched["kept"]) == 1  # latest of the missed slots
    shown = run_cli(["schedules", "list", "--json"], cli_env)
    assert '"last_job_id"' in shown.stdout
    assert '"state": "active"' in shown.stdout


def test_a_period_edited_to_nan_or_infinity_is_listed_as_json(
    conn: Conn, store: Store, cli_env: dict[str, str]
) -> None:
    """`every > 0` lets NaN and infinity through in PostgreSQL; a row edited by hand must not
    make `schedules list --json` print what is not JSON."""
    store.sync_schedules([Schedule(name, "Noop", every=60) for name in ("nan", "inf", "ok")])
    conn.execute("UPDATE passito_jobs.schedules SET every = 'NaN' WHERE name = 'nan'")
    conn.execute("UPDATE passito_jobs.schedules SET every = 'Infinity' WHERE name = 'inf'")
    shown = run_cli(["schedules", "list", "--json"], cli_env)
    assert shown.returncode == 0, shown.stderr
    rows = {row["name"]: row for row in json.loads(shown.stdout, parse_constant=_not_json)}
    assert (rows["nan"]["every"], rows["inf"]["every"], rows["ok"]["every"]) == (None, None, 60.0)
    listed = run_cli(["schedules", "list"], cli_env)
    assert listed.returncode == 0, listed.stderr
    assert "nan" not in listed.stdout.replace("nan ", "", 1)  # only the name, no period of NaN


def _not_json(name: str) -> None:
    raise AssertionError(f"printed {name}, which is not JSON")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["schedules", "pause", "nope"], "no schedule named 'nope'"),
        (["schedules", "pause", "x" * 500], "schedule name must be at most 128 characters"),
        (["schedules", "resume", "a\x01b"], "must not contain control characters"),
        (["schedules", "pause"], "the following arguments are required: NAME"),
    ],
)
def test_schedules_commands_refuse_bad_names_in_one_line(
    cli_env: dict[str, str], args: list[str], message: str
) -> None:
    result = run_cli(args, cli_env)
    assert result.returncode in (1, 2)
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {name: a, type: Noop, cron: 'not a cron'}\n", "is not a cron expression"),
        ("- {name: a, type: Noop, every: 0s}\n", "every must be at least 1s"),
        ("- {name: a, type: Noop, every: .nan}\n", "every must be at least 1s"),
        ("- {name: a, type: Noop, every: 1s, timezone: Mars/Olympus}\n", "unknown timezone 'Mars/Olympus'"),
        ("- {name: a, type: Noop, every: 1s, colour: red}\n", "unknown field 'colour'"),
        ("- {name: a, type: Noop, every: 1s}\n- {name: a, type: Noop, every: 2s}\n", "appears twice"),
        ("schedules: [\n", "is not YAML"),
        ("just text\n", "must hold a list of schedules"),
    ],
)
def test_a_bad_schedules_file_stops_the_worker_with_one_line(
    cli_env: dict[str, str], tmp_path: Path, text: str, message: str
) -> None:
    path = schedules_file(tmp_path, text)
    result = run_cli(
        ["worker", "--import", "tests.jobtypes"], {**cli_env, "PASSITO_SCHEDULES_FILE": str(path)}
    )
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_worker_without_schedules_marks_the_removed_ones_stale(store: Store, database_url: str) -> None:
    from tests.inprocess import InProcessWorker

    store.sync_schedules([Schedule("removed", "Noop", every=1.0)])
    with InProcessWorker(database_url, registry=Registry(), maintenance={"interval": 0.2}):
        wait_for(lambda: store.list_schedules()[0].stale, timeout=60, message="the schedule to turn stale")
    assert store.list_schedules()[0].last_job_id is None  # and it never ran


def test_a_schedule_whose_job_the_database_refuses_stops_no_other(conn: Conn, store: Store) -> None:
    big = Schedule("big", "Noop", every=1.0, payload={"text": "x" * 200})
    small = Schedule("small", "Noop", every=1.0)
    store.sync_schedules([big, small])
    for name in ("big", "small"):
        _aged(conn, name, 3)
    conn.execute("SELECT set_config('passito_jobs.max_payload_bytes', '100', false)")
    before = store.list_schedules()[0].last_slot
    result = run_round(store, [big, small])
    assert "payload" in result.refused["big"]
    assert len(result.dispatched["small"]) in (3, 4)  # seen in time: every slot runs
    assert slots_of(conn, "big") == []
    assert store.list_schedules()[0].last_slot == before  # its slots wait for the payload to fit


@pytest.mark.slow
def test_a_job_module_registers_a_schedule_that_the_worker_runs(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    worker = WorkerProcess({**cli_env, **FAST_LEASE}, tmp_path / "w.log", "--import", "tests.periodic_jobs")
    try:
        wait_for(lambda: len(slots_of(conn, "every-second")) >= 3, timeout=90, message="three runs")
        listed = run_cli(["schedules", "list"], cli_env)
    finally:
        assert worker.stop() == 0
    assert "Schedules: every-second" in worker.log()
    row = conn.execute(
        "SELECT queue, payload FROM passito_jobs.jobs WHERE unique_key LIKE 'schedule:every-second:%' LIMIT 1"
    ).fetchone()
    assert row == ("periodic", {"from": "code"})
    (line,) = [ln for ln in listed.stdout.splitlines() if ln.startswith("every-second")]
    assert line.split()[1:5] == ["active", "every", "1s", "Noop"]
    assert line.split()[-1].startswith("#")
