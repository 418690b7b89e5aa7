"""Fixtures of the deploy tests: podman as root, the base image and the relay image built once for the session."""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.conftest import _need
from tests.deploy import images


def need_root_podman() -> None:
    """Skip with the reason locally; in CI (`CI` set) a missing piece fails, as tests/conftest.py's _need does."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the container tests run podman as root in CI")
        pytest.skip("the container tests need root (rootful podman with runc)")
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            _need(tool)


@pytest.fixture(scope="session")
def podman_env() -> dict[str, str]:
    need_root_podman()
    return images.podman_env()


@pytest.fixture(scope="session")
def base_image(podman_env: dict[str, str]) -> str:
    """Debian with Python (and redis-server, to stand in for compose.yaml's Redis image): minutes the first time."""
    started = time.monotonic()
    tag = images.base_image(podman_env)
    print(f"\n[deploy] base image {tag} in {time.monotonic() - started:.1f} s")
    return tag


@pytest.fixture(scope="session")
def relay_image(podman_env: dict[str, str], base_image: str) -> Iterator[str]:
    """The repository's Dockerfile built on the local Debian base, once per source tree."""
    started = time.monotonic()
    tag = images.relay_image(podman_env, base_image)
    print(f"\n[deploy] relay image {tag} in {time.monotonic() - started:.1f} s")
    yield tag
