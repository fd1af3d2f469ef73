"""Fixtures of the image tests: a Docker engine, the Debian base image, the three images."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images.engine import (
    EngineUnavailableError,
    build_image,
    docker_engine,
    ensure_base_image,
    remove_containers,
)

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("worker", "supervisor", "health")


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Docker engine; skips locally without one, fails under CI=true."""
    try:
        with docker_engine(tmp_path_factory.mktemp("dockerd")) as description:
            yield description
    except EngineUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true needs the image tests: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def base_image(engine: str) -> str:
    return ensure_base_image()


@pytest.fixture(scope="session")
def images(base_image: str) -> dict[str, str]:
    """service -> tag of the image built from services/<service>/Dockerfile on the base image."""
    tags = {}
    for service in SERVICES:
        tag = f"passito-jobs-{service}:test"
        build_image(service, base_image, tag, ROOT)
        tags[service] = tag
    return tags


@pytest.fixture
def container_names() -> Iterator[list[str]]:
    """Names for containers; every one of them is removed after the test."""
    names: list[str] = []
    yield names
    remove_containers(names)


def new_name(names: list[str]) -> str:
    name = f"passito-test-{uuid.uuid4().hex[:10]}"
    names.append(name)
    return name
