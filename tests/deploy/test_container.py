"""The container image as users run it: built from the repository's Dockerfile, the config mounted read-only, the
queue on a volume. A submission is delivered once, nothing runs as root, the health check passes, `podman stop`
during a delivery ends within the grace period with the job's lease handed back in the volume, and a new
container delivers it."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from formrelay.core.version import __version__
from formrelay.web.serving import STOP_TIMEOUT
from tests.conftest import free_port, received
from tests.deploy.images import podman

pytestmark = pytest.mark.container

# What the docs tell users to give the container to stop (run --stop-timeout, compose stop_grace_period).
GRACE = 40
# The backup command of docs/deploy/backups.md (SQLite's online backup, safe while the relay writes).
BACKUP = ("import sqlite3; sqlite3.connect('/var/lib/formrelay/queue.sqlite3')"
          ".backup(sqlite3.connect('/var/lib/formrelay/queue-backup.sqlite3'))")
PERSON = {"FirstName": "Ann", "LastName": "Lee", "PostalCode": "20009"}


def write_config(directory: Path, sandbox_url: str) -> Path:
    """A config with no [queue] path, readable by the image's user, as an operator would mount it."""
    directory.mkdir()
    directory.chmod(0o755)
    config = directory / "formrelay.toml"
    config.write_text(f'''[relay]
rate_limit = ""
timeout = 60
[queue]
backoff_base = 2
backoff_cap = 1
poll_interval = 0.1
[providers.ngp]
base_url = "{sandbox_url}/ngp/v2"
api_key = "sandbox-ngp-api-key"
[forms.join]
provider = "ngp"
form_id = "demo-petition"
''')
    config.chmod(0o644)
    return directory


class Relay:
    """One container of the image on the host's network (so it reaches the fake CRM on 127.0.0.1)."""

    def __init__(self, env: dict[str, str], image: str, conf: Path, volume: str, names: list[str]) -> None:
        self.env = env
        self.port = free_port()
        self.name = f"formrelay-ci-{uuid.uuid4().hex[:12]}"
        names.append(self.name)
        podman(env, "run", "-d", "--name", self.name, "--network", "host", "--stop-timeout", str(GRACE),
               "-e", "FORMRELAY_HOST=127.0.0.1", "-e", f"FORMRELAY_PORT={self.port}",
               "-v", f"{volume}:/var/lib/formrelay", "-v", f"{conf}:/etc/formrelay:ro", image)
        self.url = f"http://127.0.0.1:{self.port}"

    def inspect(self, fmt: str) -> str:
        return podman(self.env, "inspect", "--format", fmt, self.name).stdout.strip()

    def logs(self) -> str:
        done = podman(self.env, "logs", self.name, check=False)
        return done.stdout + done.stderr

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert self.inspect("{{.State.Running}}") == "true", f"the container exited:\n{self.logs()}"
            assert time.monotonic() < deadline, f"not serving within {timeout} s:\n{self.logs()}"
            time.sleep(0.2)

    def queue(self) -> dict[str, Any]:
        """What `formrelay queue list` says in the running container (same config, same volume)."""
        return dict(json.loads(podman(self.env, "exec", self.name, "formrelay", "queue", "list", "--json").stdout))

    def post(self, email: str) -> requests.Response:
        return requests.post(f"{self.url}/v1/forms/join", json={**PERSON, "EmailAddress": email}, timeout=20)


@pytest.fixture
def cleanup(podman_env: dict[str, str]) -> Iterator[tuple[list[str], list[str]]]:
    names: list[str] = []
    volumes: list[str] = []
    yield names, volumes
    for name in names:
        podman(podman_env, "rm", "--force", "--time", "0", name, check=False)
    for volume in volumes:
        podman(podman_env, "volume", "rm", "--force", volume, check=False)


def emails(sandbox: Any) -> list[str]:
    return sorted(r["fields"]["EmailAddress"][0] for r in received(sandbox, "ngp"))


def wait_for(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_the_image_says_how_it_runs(relay_image: str, podman_env: dict[str, str]) -> None:
    inspected = json.loads(podman(podman_env, "image", "inspect", relay_image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert config["StopSignal"] in ("SIGTERM", "15")
    # Docker's format keeps the HEALTHCHECK (OCI's has none): podman build --format docker, as the docs say.
    assert (inspected.get("Healthcheck") or config.get("Healthcheck"))["Test"] == ["CMD", "formrelay", "healthcheck"]
    assert "/var/lib/formrelay" in config["Volumes"]
    assert config["Cmd"] == ["formrelay", "serve"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["FORMRELAY_QUEUE_PATH"].startswith("/var/lib/formrelay/")
    assert not [name for name in env if name.startswith("PIP_")], "package index settings reached the image"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "formrelay"
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    # Nothing baked in: no config, no pip, no wheels; the version is the package's.
    inside = podman(podman_env, "run", "--rm", "--network", "none", "--no-healthcheck", relay_image, "sh", "-c",
                    "formrelay --version; id -u; ls -A /etc/formrelay | wc -l; ls /opt/formrelay/bin/ | grep -c pip;"
                    " ls / | grep -c wheels; true").stdout.split("\n")
    assert inside[:5] == [f"formrelay, version {__version__}", "10001", "0", "0", "0"], inside


def test_without_a_config_it_stops_with_what_to_do(relay_image: str, podman_env: dict[str, str]) -> None:
    done = podman(podman_env, "run", "--rm", "--network", "none", "--no-healthcheck", relay_image, check=False, timeout=60)
    assert done.returncode != 0
    assert "/etc/formrelay/formrelay.toml: no such config file" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_container_delivers_stops_gracefully_and_its_volume_keeps_the_queue(
        relay_image: str, podman_env: dict[str, str], sandbox: Any, tmp_path: Path,
        cleanup: tuple[list[str], list[str]]) -> None:
    assert GRACE >= STOP_TIMEOUT + 5, "the grace period must cover granian's stop timeout"
    names, volumes = cleanup
    conf = write_config(tmp_path / "conf", sandbox.url)
    volume = f"formrelay-ci-{uuid.uuid4().hex[:12]}"
    volumes.append(volume)
    podman(podman_env, "volume", "create", volume)

    first = Relay(podman_env, relay_image, conf, volume, names)
    first.wait_serving()
    checked = podman(podman_env, "healthcheck", "run", first.name, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr + first.logs()
    assert first.inspect("{{.State.Health.Status}}") == "healthy"
    processes = podman(podman_env, "top", first.name, "user", "args").stdout.splitlines()[1:]
    assert processes and all(line.split()[0] == "formrelay" for line in processes), processes

    answer = first.post("ann@example.org")
    assert answer.status_code == 200 and answer.json()["status"] == "delivered", answer.text
    time.sleep(1)  # would the queue send it a second time?
    assert emails(sandbox) == ["ann@example.org"]

    # The CRM fails the supporter's attempt (queued), then takes the worker's retry and never answers: the stop
    # comes while that delivery is in flight, holding the job's lease.
    control = f"{sandbox.url}/_control"
    requests.post(f"{control}/fail", json={"provider": "ngp", "status": 503, "count": 1}, timeout=5)
    answer = first.post("bob@example.org")
    requests.post(f"{control}/hang", json={"provider": "ngp", "seconds": 120}, timeout=5)
    assert answer.status_code == 202 and answer.json()["status"] == "queued", answer.text
    assert wait_for(lambda: first.queue()["inflight"] == 1, 30), first.logs()
    started = time.monotonic()
    podman(podman_env, "stop", first.name, timeout=GRACE + 30)  # the container's own --stop-timeout applies
    took = time.monotonic() - started
    logs = first.logs()
    print(f"\n[deploy] podman stop with a delivery in flight: {took:.1f} s")
    assert took < GRACE, f"podman stop took {took:.1f} s\n{logs}"
    assert first.inspect("{{.State.ExitCode}}") == "0", logs  # 137 would be the SIGKILL after the grace period
    assert "Granian shutdown completed" in logs, logs

    listed = podman(podman_env, "run", "--rm", "--network", "none", "--no-healthcheck", "-v", f"{volume}:/var/lib/formrelay",
                    "-v", f"{conf}:/etc/formrelay:ro", relay_image, "formrelay", "queue", "list", "--json")
    queue = json.loads(listed.stdout)
    # Handed back at the stop as an expired lease (README: the next claim takes it at once, as uncertain), where a
    # SIGKILL would have left the lease of 120 s from the claim.
    [job] = queue["jobs"]
    assert job["form"] == "join" and job["state"] == "inflight", queue
    assert job["lease_until"] <= time.time(), queue
    assert f"handed back the lease of job {job['id']}" in logs, logs
    assert emails(sandbox) == ["ann@example.org"]

    second = Relay(podman_env, relay_image, conf, volume, names)
    second.wait_serving()
    # docs/deploy/backups.md: an online copy of the queue from the running container, read back as a queue.
    podman(podman_env, "exec", second.name, "python", "-c", BACKUP)
    copy = podman(podman_env, "run", "--rm", "--network", "none", "--no-healthcheck",
                  "-v", f"{volume}:/var/lib/formrelay", "-v", f"{conf}:/etc/formrelay:ro",
                  "-e", "FORMRELAY_QUEUE_PATH=/var/lib/formrelay/queue-backup.sqlite3", relay_image,
                  "formrelay", "queue", "list", "--json")
    assert [copied["id"] for copied in json.loads(copy.stdout)["jobs"]] == [job["id"]]

    requests.post(f"{control}/recover", timeout=5)
    assert wait_for(lambda: "bob@example.org" in emails(sandbox), 30), second.logs()
    time.sleep(1)
    assert emails(sandbox) == ["ann@example.org", "bob@example.org"]
