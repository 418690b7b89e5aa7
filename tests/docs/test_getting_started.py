"""Every shell command in Getting started is one the tests run, and the first real form works as the page says.

The page's commands: the demo (set up and `formrelay demo`), the test command (the one `.ci/run` runs: the very
command running this test), and `formrelay check` and `formrelay serve` with the page's formrelay.toml. The config
is the page's own, with the CRM's address and the form's id pointed at the sandbox NGP on 127.0.0.1 (the only
change); `--port` is added where the test needs a free port.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, received, wait_until_serving
from tests.docs.conftest import DOCS, fenced
from tests.docs.test_readme import ci_command, shell_lines

PAGE = (DOCS / "getting-started.md").read_text()
BIN = Path(sys.executable).parent
SETUP = "python3 -m venv .venv && . .venv/bin/activate && pip install "


def test_every_command_on_the_page_is_one_the_tests_run():
    known = {SETUP + "-e . && formrelay demo", ci_command(), "formrelay check --config formrelay.toml",
             "formrelay serve --config formrelay.toml"}
    commands = shell_lines(PAGE)
    assert set(commands) == known, f"commands on the page that no test runs: {set(commands) - known}"
    assert ci_command().startswith(SETUP), "the demo's set-up is the test command's, without the test extra"


def run(command: str, port: int | None = None) -> list[str]:
    """The page's command as argv, run with this venv's formrelay; with port, --port added."""
    argv = command.split()
    assert argv[0] == "formrelay"
    return [str(BIN / "formrelay"), *argv[1:], *(["--port", str(port)] if port else [])]


@pytest.mark.e2e
def test_the_demo_command_serves_the_example_page(tmp_path):
    demo = next(c for c in shell_lines(PAGE) if c.endswith("formrelay demo")).split(" && ")[-1]
    port = free_port()
    proc = subprocess.Popen(run(demo, port), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, proc)
        page = requests.get(url + "/", timeout=10)
        assert page.status_code == 200 and "data-formrelay" in page.text
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.e2e
def test_the_first_real_form_checks_serves_and_delivers(tmp_path, sandbox):
    code = next(code for _, code, _ in fenced(PAGE, "toml"))
    raw = tomllib.loads(code)
    assert raw["providers"]["ngp"]["api_key"] == "${NGP_API_KEY}"
    code = code.replace("[providers.ngp]\n", f'[providers.ngp]\nbase_url = "{sandbox.url}/ngp/v2"\n', 1)
    code = code.replace(f'form_id = "{raw["forms"]["join"]["form_id"]}"', 'form_id = "demo-petition"', 1)
    (tmp_path / "formrelay.toml").write_text(code)
    env = {**os.environ, "NGP_API_KEY": "placeholder-ngp-key"}
    env.pop("FORMRELAY_CONFIG", None)

    check = subprocess.run(run("formrelay check --config formrelay.toml"), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "EmailAddress" in check.stdout

    port = free_port()
    proc = subprocess.Popen(run("formrelay serve --config formrelay.toml", port), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, proc)
        person = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}
        answer = requests.post(url + "/v1/forms/join", data=person, allow_redirects=False, timeout=10)
        assert answer.status_code == 303, answer.text
        assert answer.headers["Location"] == raw["forms"]["join"]["success_url"]
        assert any(item.get("EmailAddress") == "ann@example.org" or "ann@example.org" in str(item)
                   for item in received(sandbox, "ngp"))
        script = requests.get(url + "/static/formrelay.js", timeout=10)
        assert script.status_code == 200  # the page's <script src=".../static/formrelay.js">
    finally:
        proc.terminate()
        proc.wait(30)
