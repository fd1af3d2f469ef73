"""The engine and its plug-ins, settings from files, and the names that changed, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from passito_jobs import dispatch
from tests.helpers import TESTS, WorkerProcess, job_state, run_cli, wait_for

Conn = psycopg.Connection[Any]


def python(code: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *options, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def loaded_modules(code: str) -> set[str]:
    done = python(f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))")
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_public_api_loads_no_job_type_and_no_renderer() -> None:
    modules = loaded_modules(
        "import passito_jobs, passito_jobs.queue.store, passito_jobs.queue.dispatch\n"
        "from passito_jobs.registry import registry\n"
        "assert registry.names() == [], registry.names()"
    )
    assert "passito_jobs" in modules
    assert not {m for m in modules if m.startswith(("passito_jobs.outpass", "passito_jobs.jobs"))}
    assert not {m for m in modules if m.split(".")[0] in {"weasyprint", "qrcode", "jinja2", "kopf"}}


def test_the_engines_commands_do_not_load_the_passito_plug_in() -> None:
    engine = loaded_modules("from passito_jobs.cli import build_parser\nbuild_parser(['worker', '--help'])")
    assert not {m for m in engine if m.startswith("passito_jobs.outpass")}
    plugin = loaded_modules("from passito_jobs.cli import build_parser\nbuild_parser(['outpass'])")
    assert "passito_jobs.outpass.commands" in plugin
    assert "weasyprint" not in plugin  # its job types render only when they run


def test_the_old_import_paths_still_work_with_a_deprecation_warning() -> None:
    done = python(
        "from passito_jobs.jobs.registry import JobContext, job_type\n"
        "from passito_jobs.jobs.tokens import verify_token\n"
        "from passito_jobs.registry import registry\n"
        "print(len(registry.names()))",
        "-W",
        "always::DeprecationWarning",
    )
    assert done.returncode == 0, done.stderr
    assert "DeprecationWarning: passito_jobs.jobs is deprecated" in done.stderr
    assert done.stderr.count("DeprecationWarning") == 1  # once, for the package
    assert int(done.stdout) == 5  # importing it still registers Passito's job types


def test_a_worker_with_only_its_own_job_module_needs_no_signing_key(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env.items() if k not in {"PASSITO_SECRET_KEY", "PASSITO_STORAGE_DIR"}}
    job = dispatch("RecordSideEffect", conn=conn)
    worker = WorkerProcess(env, tmp_path / "worker.log")  # --import tests.jobtypes only
    try:
        wait_for(lambda: job_state(conn, job) == "completed", message="the job to complete")
    finally:
        assert worker.stop() == 0, worker.log()
    log = worker.log()
    assert "GenerateQrCode" not in log  # Passito's job types were never loaded
    processing = next(line for line in log.splitlines() if f"Processing Job #{job} " in line)
    assert f"job_id={job} job_type=RecordSideEffect queue=default attempt=1/3 worker_id=" in processing


def test_secret_settings_come_from_files(cli_env: dict[str, str], tmp_path: Path) -> None:
    url_file = tmp_path / "database-url"
    url_file.write_text(cli_env["PASSITO_DATABASE_URL"] + "\n")
    env = {k: v for k, v in cli_env.items() if k not in {"PASSITO_DATABASE_URL", "PASSITO_SECRET_KEY"}}
    done = run_cli(["jobs", "list"], {**env, "PASSITO_DATABASE_URL_FILE": str(url_file)})
    assert (done.returncode, done.stdout.strip()) == (0, "no jobs match"), done.stderr

    both = run_cli(["jobs", "list"], {**cli_env, "PASSITO_DATABASE_URL_FILE": str(url_file)})
    assert (both.returncode, both.stderr.strip()) == (
        2,
        "passito-jobs: error: set PASSITO_DATABASE_URL or PASSITO_DATABASE_URL_FILE, not both",
    )
    missing = tmp_path / "no-such-file"
    gone = run_cli(["jobs", "list"], {**env, "PASSITO_DATABASE_URL_FILE": str(missing)})
    assert (gone.returncode, gone.stderr.strip()) == (
        2,
        f"passito-jobs: error: PASSITO_DATABASE_URL_FILE: cannot read {missing}: No such file or directory",
    )
    key_file = tmp_path / "secret-key"
    key_file.write_text("x" * 40 + "\n")
    verify = run_cli(["approval", "verify", "v1.e30.e30"], {**env, "PASSITO_SECRET_KEY_FILE": str(key_file)})
    assert verify.returncode == 1  # read the key, then found the token invalid
    assert "invalid token" in verify.stderr
    assert "x" * 40 not in verify.stderr


def test_old_names_still_work_and_say_so_in_one_line(conn: Conn, cli_env: dict[str, str]) -> None:
    dispatch("Noop", conn=conn)
    done = run_cli(["jobs", "list", "--status", "pending"], cli_env)
    assert done.returncode == 0
    assert done.stderr.strip() == (
        "passito-jobs: warning: --status is deprecated and will be removed in the next release: use --state"
    )
    assert "pending" in done.stdout
    done = run_cli(["health", "--recover", "--max-failure-rate", "0.5"], cli_env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [
        "passito-jobs: warning: --recover is deprecated and will be removed in the next release: "
        "use --rescue",
        "passito-jobs: warning: --max-failure-rate is deprecated and will be removed in the next release: "
        "use --max-failure-ratio",
    ]
    assert "Rescued: returned 0 stuck job(s) to pending" in done.stdout
    done = run_cli(["health", "--json"], {**cli_env, "PASSITO_STUCK_TIMEOUT": "90s"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["thresholds"]["stuck_after_seconds"] == 90
    (warning,) = done.stderr.strip().splitlines()
    assert warning.endswith(
        "PASSITO_STUCK_TIMEOUT is deprecated and will stop working in the next release: "
        "use PASSITO_STUCK_AFTER"
    )


def test_a_problem_names_each_setting_as_the_user_gave_it(cli_env: dict[str, str]) -> None:
    done = run_cli(["supervise", "--min-workers", "5"], {**cli_env, "PASSITO_MAX_WORKERS": "2"})
    assert (done.returncode, done.stderr.strip()) == (
        2,
        "passito-jobs: error: --min-workers (5) must not exceed PASSITO_MAX_WORKERS (2)",
    )
    done = run_cli(["health", "--window", "0"], cli_env)
    assert done.returncode == 2
    assert done.stderr.strip() == "passito-jobs: error: --window must be a positive duration, got 0.0"


def test_help_shows_the_defaults_of_the_settings() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "passito_jobs", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=TESTS.parent,
    )
    help_text = " ".join(done.stdout.split())
    assert "(PASSITO_CONCURRENCY, default 10)" in help_text
    assert "(PASSITO_SHUTDOWN_TIMEOUT, default 30s)" in help_text


def test_the_operators_metrics_are_registered_when_it_starts_not_when_it_is_imported() -> None:
    done = python(
        "import passito_jobs.supervisor.operator as operator\n"
        "from prometheus_client import REGISTRY\n"
        "def ours():\n"
        "    names = REGISTRY._names_to_collectors\n"
        "    return sorted(n for n in names if n.startswith('passito_jobs_autoscaler'))\n"
        "print(len(ours()))\n"
        "operator.OperatorMetrics.start()\n"
        "print(len(ours()))\n"
        "operator.OperatorMetrics.start()  # a second start in one process replaces the first\n"
        "print(len(ours()))"
    )
    assert done.returncode == 0, done.stderr
    before, started, again = map(int, done.stdout.split())
    assert before == 0
    assert started == again > 0
