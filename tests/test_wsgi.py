"""The relay runs under any WSGI server (`wsgi:app`) and as `formrelay serve`, configured by FORMRELAY_CONFIG."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent


def config_file(tmp_path, sandbox_url):
    path = tmp_path / "relay.toml"
    path.write_text(f'[providers.ngp]\nbase_url = "{sandbox_url}/ngp/v2"\napi_key = "sandbox-ngp-api-key"\n'
                    '[forms.join]\nprovider = "ngp"\nform_id = "demo-petition"\n')
    return path


def test_wsgi_module_builds_the_app_from_formrelay_config(tmp_path, sandbox):
    path = config_file(tmp_path, sandbox.url)
    code = ("import wsgi; c = wsgi.app.test_client(); r = c.get('/v1/forms/join'); "
            "print(r.status_code, r.get_json()['fields'][0]['name'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FORMRELAY_CONFIG": str(path)})
    assert done.stdout.split() == ["200", "FirstName"], done.stderr


def test_formrelay_serve_answers_over_http(tmp_path, sandbox):
    path = config_file(tmp_path, sandbox.url)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "formrelay.cli", "serve", "--config", str(path), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", proc, 20)
        answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert answer.json()["status"] == "ok"
        posted = requests.post(f"http://127.0.0.1:{port}/v1/forms/join", json={
            "FirstName": "Ann", "LastName": "Lee", "EmailAddress": "a@example.org", "PostalCode": "20009"}, timeout=5)
        assert posted.json()["status"] == "delivered"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_metrics_count_every_gunicorn_worker(tmp_path, sandbox):
    """Under gunicorn with the shipped config, any worker's /metrics counts the submissions of all workers."""
    import shutil

    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent))
    assert gunicorn, "gunicorn is in the test extra"
    path = config_file(tmp_path, sandbox.url)
    with path.open("a") as f:
        f.write(f'[queue]\npath = "{tmp_path / "queue.sqlite3"}"\n[relay]\nrate_limit = ""\n')
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = {**os.environ, "FORMRELAY_CONFIG": str(path), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    proc = subprocess.Popen([gunicorn, "-c", "python:formrelay.gunicorn_conf", "--workers", "3", "--threads", "2",
                             "--bind", f"127.0.0.1:{port}", "wsgi:app"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, proc)
        person = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "a@example.org", "PostalCode": "20009"}
        def serving_pids():
            return {p.name.split("_")[-1].split(".")[0] for p in metrics_dir.glob("counter_*.db")}

        posted = 0
        # A new connection each time; gunicorn does not promise to spread them, so post until two workers
        # have counted some (bounded), and expect every scrape to report all that were posted.
        while posted < 30 or (len(serving_pids()) < 2 and posted < 300):
            answer = requests.post(f"{base}/v1/forms/join", json=person, timeout=5, headers={"Connection": "close"})
            assert answer.json()["status"] == "delivered"
            posted += 1
        assert len(serving_pids()) >= 2, "the submissions should have reached more than one worker"
        for _ in range(5):  # whichever worker answers the scrape, it reports all of them
            text = requests.get(f"{base}/metrics", timeout=5, headers={"Connection": "close"}).text
            line = next(x for x in text.splitlines() if x.startswith("formrelay_submissions_total{")
                        and 'outcome="delivered"' in x)
            assert float(line.rsplit(" ", 1)[1]) == posted
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.e2e
def test_gunicorn_serves_formrelay_wsgi_app_from_the_wheel_outside_the_checkout(tmp_path, sandbox):
    """`gunicorn formrelay.wsgi:app` with the package from a built wheel, run from a directory with no wsgi.py."""
    import zipfile

    from tests.servers import stop

    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("formrelay-*.whl")
    assert "formrelay/wsgi.py" in zipfile.ZipFile(wheel).namelist()
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    elsewhere = tmp_path / "site"
    elsewhere.mkdir()
    path = config_file(elsewhere, sandbox.url)
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR",)}
    env.update(PYTHONPATH=str(unpacked), FORMRELAY_CONFIG=str(path))
    where = subprocess.run([sys.executable, "-c", "import formrelay.wsgi as w; print(w.__file__)"], env=env,
                           cwd=elsewhere, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(unpacked)), where.stderr[-2000:]
    port = free_port()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    proc = subprocess.Popen([str(gunicorn), "--bind", f"127.0.0.1:{port}", "--workers", "1", "formrelay.wsgi:app"],
                            cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", proc, 30)
        posted = requests.post(f"http://127.0.0.1:{port}/v1/forms/join", json={
            "FirstName": "Ann", "LastName": "Lee", "EmailAddress": "a@example.org", "PostalCode": "20009"}, timeout=10)
        assert posted.json()["status"] == "delivered"
    finally:
        stop(proc)
