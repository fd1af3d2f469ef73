"""A Docker engine for the image tests, and a base image built from Debian packages.

No container registry is reachable in this project's build environment, so the official Python
image cannot be pulled: the tests debootstrap Debian bookworm with python3 (the same Debian the
official `python:3.11-slim-bookworm` image is built on), `docker import` it, and pass it to the
Dockerfiles as BASE_IMAGE. The image is tagged with a hash of its recipe and reused while the
recipe is unchanged (debootstrap takes about a minute).

The engine: the one DOCKER_HOST (or the default socket) points at when it answers; otherwise,
under CI=true (or PASSITO_TEST_START_DOCKERD=1) and as root, Debian's `dockerd` is started here
and stopped again at the end of the session.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
INCLUDE = ("python3", "python3-venv", "python3-pip", "ca-certificates")
BASE_RECIPE = {
    "suite": "bookworm",
    "variant": "minbase",
    "include": ",".join(INCLUDE),
    "mirror": DEBIAN_MIRROR,
    # Where the image keeps the host's CA bundle; pip.conf points at it, so pip inside
    # `docker build` trusts what the host trusts (a TLS-inspecting proxy included).
    "ca_bundle": "/etc/ssl/host-ca-bundle.crt",
    "revision": 1,  # bump to rebuild after changing build_base_image()
}
BASE_REPOSITORY = "passito-jobs-test-base"


class EngineUnavailableError(RuntimeError):
    """No Docker engine answers and none can be started here; the message says why."""


def docker_env() -> dict[str, str]:
    """The environment of every docker command: the classic builder (BuildKit needs the buildx
    plugin, which Debian's docker.io does not ship)."""
    return {**os.environ, "DOCKER_BUILDKIT": "0"}


def docker(
    *args: str, timeout: float = 120, check: bool = True, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `docker ARGS`; on failure (with check) raise with the command's output."""
    result = subprocess.run(
        ["docker", *args],
        env=docker_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        output = result.stdout + result.stderr
        raise AssertionError(f"docker {' '.join(args)} exited {result.returncode}:\n{output[-4000:]}")
    return result


def engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def docker_engine(log_dir: Path) -> Iterator[str]:
    """Yield a description of a running engine; start (and later stop) dockerd if allowed."""
    if engine_answers():
        yield "an engine that was already running"
        return
    allowed = os.environ.get("CI") == "true" or os.environ.get("PASSITO_TEST_START_DOCKERD") == "1"
    if not allowed:
        raise EngineUnavailableError(
            "no Docker engine is running (start one, or set CI=true or PASSITO_TEST_START_DOCKERD=1 "
            "to let the tests start Debian's dockerd as root)"
        )
    if not shutil.which("dockerd") or not shutil.which("docker"):
        raise EngineUnavailableError("dockerd or docker is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise EngineUnavailableError("starting dockerd needs root")
    log_path = log_dir / "dockerd.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["dockerd", "--log-level=warn"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while not engine_answers():
            if process.poll() is not None:
                raise EngineUnavailableError(
                    f"dockerd exited with {process.returncode}: {log_path.read_text()[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise EngineUnavailableError(f"dockerd did not answer within 90s; see {log_path}")
            time.sleep(0.5)
        yield f"dockerd started by the tests (pid {process.pid}, log {log_path})"
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _pip_index_settings() -> dict[str, str]:
    """The host's pip index-url / extra-index-url when they are http(s) URLs (file:// indexes
    of the host are not visible inside a container)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    settings: dict[str, str] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in {"index-url", "extra-index-url"}:
            urls = [u for u in value.strip("'\"").split() if u.startswith(("http://", "https://"))]
            if urls:
                settings[name] = " ".join(urls)
    for name in ("index-url", "extra-index-url"):
        value = os.environ.get("PIP_" + name.upper().replace("-", "_"), "")
        urls = [u for u in value.split() if u.startswith(("http://", "https://"))]
        if urls:
            settings[name] = " ".join(urls)
    return settings


def _pip_conf() -> str:
    lines = ["[global]", f"cert = {BASE_RECIPE['ca_bundle']}"]
    lines += [f"{name} = {value}" for name, value in sorted(_pip_index_settings().items())]
    return "\n".join(lines) + "\n"


def base_image_tag() -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(BASE_RECIPE, sort_keys=True).encode())
    digest.update(_pip_conf().encode())
    digest.update(HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.exists() else b"")
    return f"{BASE_REPOSITORY}:{digest.hexdigest()[:12]}"


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False, timeout=30).returncode == 0


def build_base_image(tag: str) -> None:
    """debootstrap + the host's CA bundle + pip.conf, imported as `tag` (about a minute)."""
    if not shutil.which("debootstrap"):
        raise EngineUnavailableError("debootstrap is not installed (apt-get install debootstrap)")
    with tempfile.TemporaryDirectory(prefix="passito-base-") as work:
        rootfs = Path(work) / "rootfs"
        subprocess.run(
            [
                "debootstrap",
                f"--variant={BASE_RECIPE['variant']}",
                "--include=" + ",".join(INCLUDE),
                str(BASE_RECIPE["suite"]),
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        # Package caches and lists would only bloat the image (the Dockerfiles run apt-get update).
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        if HOST_CA_BUNDLE.exists():
            shutil.copyfile(HOST_CA_BUNDLE, rootfs / str(BASE_RECIPE["ca_bundle"]).lstrip("/"))
        (rootfs / "etc" / "pip.conf").write_text(_pip_conf())
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            'CMD ["python3"]',
        ]
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            imported = subprocess.run(
                ["docker", "import", *(arg for c in changes for arg in ("--change", c)), "-", tag],
                stdin=tar.stdout,
                env=docker_env(),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        if tar.returncode != 0 or imported.returncode != 0:
            raise AssertionError(f"importing the base image failed: {imported.stderr[-2000:]}")


def ensure_base_image() -> str:
    tag = base_image_tag()
    if not image_exists(tag):
        build_base_image(tag)
    return tag


def build_image(service: str, base_image: str, tag: str, context: Path) -> None:
    docker(
        "build",
        "--quiet",
        "--file",
        str(context / "services" / service / "Dockerfile"),
        "--build-arg",
        f"BASE_IMAGE={base_image}",
        "--build-arg",
        "REVISION=test",
        "--tag",
        tag,
        str(context),
        timeout=900,
    )


def image_size_mb(tag: str) -> float:
    size = docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
    return int(size) / 1_000_000


def remove_containers(names: Sequence[str]) -> None:
    if names:
        docker("rm", "--force", "--volumes", *names, check=False, timeout=60)
