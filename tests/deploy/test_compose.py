"""compose.yaml as users run it (podman-compose): the relay on the file's Redis, which keeps what it is given
(append-only, fsync every second, no eviction), delivering a submission; the tls profile adds Caddy."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import _need, free_port
from tests.deploy.images import ROOT, podman, run

pytestmark = pytest.mark.container

COMPOSE = ROOT / "compose.yaml"
SECRET = "ngp-key-6f1d0c2e-compose"
# The fake CRM runs in the stack's own network (no bridge from a container to the host's loopback): the relay's
# image with the package's sandbox providers, added by an override file as a user adds a service.
SANDBOX = ("from werkzeug.serving import run_simple; from formrelay.sandbox import create_sandbox; "
           "run_simple('0.0.0.0', 9000, create_sandbox(), threaded=True)")

# The details of /readyz, asked where they are shown (loopback inside the relay's container), whatever the code.
READYZ = ("import http.client; c = http.client.HTTPConnection('127.0.0.1', 8000, timeout=5); c.request('GET', "
          "'/readyz'); print(c.getresponse().read().decode())")


def podman_compose() -> str:
    found = shutil.which("podman-compose", path=str(Path(sys.executable).parent)) or shutil.which("podman-compose")
    if found is None:
        _need("podman-compose")
    return str(found)


def test_the_compose_file_parses_with_and_without_the_tls_profile(tmp_path: Path) -> None:
    if shutil.which("podman") is None:
        _need("podman")
    env = {**os.environ, "FORMRELAY_CONFIG_FILE": str(tmp_path / "formrelay.toml")}
    import yaml  # podman-compose's own dependency

    plain = yaml.safe_load(run([podman_compose(), "-f", str(COMPOSE), "config"], env=env).stdout)["services"]
    tls = yaml.safe_load(run([podman_compose(), "-f", str(COMPOSE), "--profile", "tls", "config"],
                             env=env).stdout)["services"]
    assert sorted(plain) == ["redis", "relay"] and sorted(tls) == ["caddy", "redis", "relay"]
    assert plain["relay"]["stop_grace_period"] == "40s" and plain["relay"]["stop_signal"] == "SIGTERM"
    assert f"{tmp_path / 'formrelay.toml'}:/etc/formrelay/formrelay.toml:ro" in plain["relay"]["volumes"]
    assert "443:443" in tls["caddy"]["ports"]
    assert any(v.endswith("/etc/caddy/Caddyfile:ro") for v in tls["caddy"]["volumes"])


def test_caddy_reads_the_caddyfile_as_a_tls_proxy_to_the_relay() -> None:
    if shutil.which("caddy") is None:
        _need("caddy")
    env = {**os.environ, "FORMRELAY_DOMAIN": "relay.example.org"}
    adapted = run(["caddy", "adapt", "--config", str(ROOT / "deploy" / "Caddyfile"), "--adapter", "caddyfile"],
                  env=env, timeout=60)
    server = json.loads(adapted.stdout)["apps"]["http"]["servers"]["srv0"]
    assert server["listen"] == [":443"]  # a site name: automatic HTTPS, HTTP redirected
    route = server["routes"][0]
    assert route["match"] == [{"host": ["relay.example.org"]}]
    handlers = route["handle"][0]["routes"][0]["handle"]
    assert handlers[0] == {"handler": "request_body", "max_size": 1_000_000}
    assert handlers[1]["handler"] == "reverse_proxy" and handlers[1]["upstreams"] == [{"dial": "relay:8000"}]


@pytest.fixture
def stack(podman_env: dict[str, str], relay_image: str, base_image: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    if shutil.which("iptables") is None:
        _need("iptables")  # netavark's bridge network, which compose gives the stack
    project = f"formrelay-ci-{uuid.uuid4().hex[:10]}"
    relay_port, crm_port = free_port(), free_port()
    config = tmp_path / "formrelay.toml"
    config.write_text('[relay]\nrate_limit = ""\nredis_url = "redis://redis:6379/0"\n'
                      '[providers.ngp]\nbase_url = "http://crm:9000/ngp/v2"\napi_key = "${NGP_API_KEY}"\n'
                      '[forms.join]\nprovider = "ngp"\nform_id = "demo-petition"\n')
    config.chmod(0o644)
    secrets = tmp_path / "formrelay.env"
    secrets.write_text(f"NGP_API_KEY={SECRET}\n")
    override = tmp_path / "compose.test.yaml"
    override.write_text(json.dumps({
        "services": {"crm": {"image": relay_image, "command": ["python", "-c", SANDBOX], "stop_signal": "SIGINT",
                             "ports": [f"127.0.0.1:{crm_port}:9000"], "volumes": ["crm-data:/var/lib/formrelay"]}},
        "volumes": {"crm-data": {}},  # named, so that `down -v` removes it with the stack's own
    }))
    env = {**podman_env, "FORMRELAY_IMAGE": relay_image, "REDIS_IMAGE": base_image,
           "FORMRELAY_CONFIG_FILE": str(config), "FORMRELAY_ENV_FILE": str(secrets),
           "FORMRELAY_PUBLISH_PORT": str(relay_port)}
    command = [podman_compose(), "-p", project, "-f", str(COMPOSE), "-f", str(override)]
    try:
        run([*command, "up", "-d"], env=env, timeout=300)
        yield {"project": project, "relay": f"http://127.0.0.1:{relay_port}", "crm": f"http://127.0.0.1:{crm_port}"}
    finally:
        subprocess.run([*command, "down", "-v"], env=env, capture_output=True, timeout=180)


def container(env: dict[str, str], project: str, service: str) -> str:
    names = podman(env, "ps", "--filter", f"label=io.podman.compose.project={project}",
                   "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}").stdout.split()
    assert len(names) == 1, (service, names)
    return names[0]


def test_the_stack_delivers_through_its_durable_redis(stack: dict[str, str], podman_env: dict[str, str]) -> None:
    relay = container(podman_env, stack["project"], "relay")
    deadline = time.monotonic() + 90
    while True:
        try:
            if requests.get(f"{stack['relay']}/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        logs = podman(podman_env, "logs", relay, check=False)
        assert time.monotonic() < deadline, f"the relay did not serve:\n{logs.stdout}{logs.stderr}"
        time.sleep(0.3)

    redis = container(podman_env, stack["project"], "redis")
    said = podman(podman_env, "exec", redis, "redis-cli", "CONFIG", "GET", "*").stdout.split("\n")
    settings = dict(zip(said[0::2], said[1::2]))
    assert settings["appendonly"] == "yes"
    assert settings["appendfsync"] in ("everysec", "always")
    assert settings["maxmemory-policy"] == "noeviction"
    assert settings["dir"] == "/data"

    answer = requests.post(f"{stack['relay']}/v1/forms/join", timeout=30, headers={"Idempotency-Key": "compose-1"},
                           json={"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org",
                                 "PostalCode": "20009"})
    assert answer.status_code == 200 and answer.json()["status"] == "delivered", answer.text
    time.sleep(1)
    got = requests.get(f"{stack['crm']}/_control/received/ngp", timeout=5).json()
    assert [r["fields"]["EmailAddress"][0] for r in got] == ["ann@example.org"]

    # The relay keeps its records in that Redis: readiness (asked from inside, where the details are shown) names
    # it, and the idempotency record of the submission is there.
    ready = podman(podman_env, "exec", relay, "python", "-c", READYZ).stdout
    assert json.loads(ready)["queue"]["storage"] == "redis", ready
    assert json.loads(ready)["status"] == "ok", ready
    assert int(podman(podman_env, "exec", redis, "redis-cli", "DBSIZE").stdout) > 0
    # docs/deploy/backups.md: a snapshot of Redis taken while it runs.
    podman(podman_env, "exec", redis, "redis-cli", "--rdb", "/data/formrelay-backup.rdb")
    size = podman(podman_env, "exec", redis, "stat", "-c", "%s", "/data/formrelay-backup.rdb").stdout
    assert int(size) > 0
    logs = podman(podman_env, "logs", relay)
    assert SECRET not in logs.stdout + logs.stderr
    assert "delivered" in logs.stdout + logs.stderr
