"""Container images for the deploy tests: no registry is reachable here, so a Debian base is made with debootstrap
(cached under /var/tmp, keyed by what goes into it), and the repository's own Dockerfile is built on it once per
source tree; every test, and every xdist worker, shares that one image (a file lock, then `podman image exists`)."""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("FORMRELAY_CI_CACHE", "/var/tmp/formrelay-ci"))
SUITE = "bookworm"
# python3-venv and python3-pip build and run the image; redis-server and redis-tools let the same base stand in
# for compose.yaml's Redis image (its command and health check name redis-server and redis-cli only).
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "redis-server")
# The host's bundle, so that pip inside the build trusts what pip on the host trusts (a proxy's CA included).
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
RECIPE = "1"  # bump to rebuild every cached base
BASE_REPO = "localhost/formrelay-ci-base"
IMAGE_REPO = "localhost/formrelay-ci"
# podman as it runs here: crun refuses the default rlimits, so runc and no default ulimits.
CONTAINERS_CONF = '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'


class PodmanError(AssertionError):
    """A podman command failed; the message carries its output."""


def podman_env() -> dict[str, str]:
    """The environment every podman call of the tests runs with: CONTAINERS_CONF names the file written here."""
    CACHE.mkdir(parents=True, exist_ok=True)
    conf = CACHE / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        part = conf.with_name(f"containers.conf.{uuid.uuid4().hex}")
        part.write_text(CONTAINERS_CONF)
        part.replace(conf)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 120, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise PodmanError(f"{' '.join(cmd[:4])}...: no end within {timeout} s") from exc
    if check and done.returncode != 0:
        raise PodmanError(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def podman(env: dict[str, str], *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], env=env, timeout=timeout, check=check)


@contextmanager
def locked(name: str) -> Iterator[None]:
    """One builder at a time across processes (xdist workers, two test runs on one machine)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def debian_mirror() -> str:
    """The Debian archive apt uses on this host (one-line or deb822 sources), else deb.debian.org."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for source in sources:
        try:
            text = source.read_text(errors="replace")
        except OSError:
            continue
        for url in re.findall(r"^(?:URIs:|deb(?:\s+\[[^\]]*\])?)\s+(\S+)", text, re.M):
            if re.match(r"https?://\S+/debian/?$", url):
                return url
    return "http://deb.debian.org/debian"


def base_image(env: dict[str, str]) -> str:
    """A local image of Debian with Python and the host's CA bundle, made once and kept (podman storage, and a
    tarball under CACHE that a CI cache can keep between machines)."""
    mirror = debian_mirror()
    recipe = hashlib.sha256()
    for part in (RECIPE, SUITE, mirror, ",".join(PACKAGES)):
        recipe.update(part.encode() + b"\0")
    recipe.update(HOST_CA.read_bytes() if HOST_CA.exists() else b"")
    key = recipe.hexdigest()[:16]
    tag = f"{BASE_REPO}:{key}"
    with locked("base"):
        if podman(env, "image", "exists", tag, check=False).returncode == 0:
            return tag
        tarball = CACHE / f"base-{key}.tar"
        if not tarball.exists():
            _debootstrap(mirror, tarball)
        podman(env, "import", "--change", 'CMD ["/bin/bash"]', str(tarball), tag, timeout=600)
    return tag


def _debootstrap(mirror: str, tarball: Path) -> None:
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), mirror],
            timeout=1500)
        if HOST_CA.exists():
            shutil.copyfile(HOST_CA, rootfs / "etc/ssl/certs/ca-certificates.crt")
        run(["chroot", str(rootfs), "apt-get", "clean"])
        for bulk in ("var/lib/apt/lists", "usr/share/doc", "usr/share/man", "var/cache/apt"):
            for entry in (rootfs / bulk).glob("*"):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        part = tarball.with_name(tarball.name + f".{uuid.uuid4().hex}.part")
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(part), "."], timeout=600)
        part.replace(tarball)
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _context_digest(base: str) -> str:
    """What the build reads (.dockerignore keeps the rest out): a changed file means a new image."""
    digest = hashlib.sha256(base.encode() + b"\0" + " ".join(index_args()).encode())
    files = [ROOT / "Dockerfile", ROOT / ".dockerignore", ROOT / "pyproject.toml", ROOT / "README.md"]
    for top in ("formrelay", "static"):
        files += sorted(p for p in (ROOT / top).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".mo"))
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def index_args() -> list[str]:
    """The host's package index settings as build args of the Dockerfile's first stage (never in the image).
    file:// indexes are left out: the build cannot see the host's disk."""
    found: dict[str, str] = {}
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        if os.environ.get(name):
            found[name] = os.environ[name]
    if len(found) < 2:
        listed = run([sys.executable, "-m", "pip", "config", "list"], check=False).stdout
        for key, value in re.findall(r"^\S*\.((?:extra-)?index-url)='([^']*)'", listed, re.M):
            name = "PIP_" + key.upper().replace("-", "_")
            found.setdefault(name, value)
    args: list[str] = []
    for name, value in sorted(found.items()):
        urls = " ".join(url for url in value.split() if url.startswith(("http://", "https://")))
        if urls:
            args += ["--build-arg", f"{name}={urls}"]
    return args


def relay_image(env: dict[str, str], base: str) -> str:
    """The repository's Dockerfile, built as a user would (podman: --format docker keeps HEALTHCHECK), with the
    local base as its ARG-selected Python image."""
    tag = f"{IMAGE_REPO}:{_context_digest(base)}"
    with locked("image"):
        if podman(env, "image", "exists", tag, check=False).returncode == 0:
            return tag
        # --layers=false: no intermediate stage images kept (a source change reruns the wheel stage anyway).
        podman(env, "build", "--layers=false", "--format", "docker", "--network", "host",
               "--build-arg", f"PYTHON_IMAGE={base}", *index_args(), "-t", tag, "-f", str(ROOT / "Dockerfile"),
               str(ROOT), timeout=1200)
        # Images of earlier source trees, once no run can still be using them (rmi refuses one in use).
        old = podman(env, "images", "-q", "--filter", f"reference={IMAGE_REPO}", "--filter", "until=6h",
                     check=False).stdout.split()
        for image in set(old):
            podman(env, "rmi", image, check=False)
    return tag
