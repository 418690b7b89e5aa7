"""Release artifacts: `python -m build` makes the sdist and, from it, the wheel; `twine check` passes; the wheel
alone, in a clean virtual environment, runs `formrelay demo` with its page, static files and catalogues."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from formrelay.core.version import __version__
from tests.conftest import free_port
from tests.deploy.images import ROOT, run

pytestmark = pytest.mark.e2e


def test_the_wheel_alone_runs_the_demo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # No --sdist/--wheel: build makes the sdist, then the wheel from the unpacked sdist (so the sdist is complete).
    # --no-isolation uses this environment's hatchling (a test dependency) instead of installing it twice.
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)], timeout=600)
    wheel = dist / f"formrelay-{__version__}-py3-none-any.whl"
    sdist = dist / f"formrelay-{__version__}.tar.gz"
    assert wheel.exists() and sdist.exists(), sorted(p.name for p in dist.iterdir())
    checked = run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)], timeout=120)
    assert checked.stdout.count("PASSED") == 2, checked.stdout
    names = zipfile.ZipFile(wheel).namelist()
    assert "formrelay/static/formrelay.js" in names and "formrelay/web/templates/demo.html" in names
    assert {"de", "es", "fr", "nl", "pt"} <= {n.split("/")[2] for n in names if n.endswith("/messages.po")}
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]

    venv = tmp_path / "venv"
    # A venv with nothing in it (not even pip: this environment's pip installs into it), the wheel's dependencies
    # from the package index; not compiled to bytecode, which would take longer than the rest of the test.
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-compile",
         str(wheel)], timeout=600)
    command = str(venv / "bin" / "formrelay")
    assert run([command, "--version"], cwd=tmp_path).stdout.strip() == f"formrelay, version {__version__}"

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("FORMRELAY_CONFIG", "PYTHONPATH")}
    log = (tmp_path / "demo.log").open("wb")
    demo = subprocess.Popen([command, "demo", "--port", str(port)], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                page = requests.get(f"{url}/", timeout=2)
                break
            except requests.ConnectionError:
                assert demo.poll() is None, (tmp_path / "demo.log").read_text()
                assert time.monotonic() < deadline, "the demo did not serve within 60 s"
                time.sleep(0.2)
        assert page.status_code == 200 and 'action="/v1/forms/petition"' in page.text
        script = requests.get(f"{url}/static/formrelay.js", timeout=5)
        assert script.status_code == 200 and "formrelay" in script.text
        german = requests.get(f"{url}/v1/forms/petition", headers={"Accept-Language": "de"}, timeout=10)
        assert german.status_code == 200 and german.headers["Content-Language"] == "de"
        assert german.json()["locale"] == "de"
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(timeout=30)
        log.close()
