"""deploy/*.service: accepted by Debian's `systemd-analyze verify`, hardened, and stopping the way the relay stops."""
from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from formrelay.web.serving import STOP_TIMEOUT
from tests.conftest import _need
from tests.deploy.images import ROOT

UNITS = [ROOT / "deploy" / "formrelay.service", ROOT / "deploy" / "formrelay-worker.service"]
INSTALLED = "/opt/formrelay/bin/formrelay"  # where the units (and docs/deploy/systemd.md) install the command
WORKER_FINISH = 10  # seconds a delivery in flight may take to finish on SIGTERM (Worker.stop's timeout)


def verify(units: list[Path], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """verify checks that ExecStart's program exists: the copies name this environment's formrelay instead of
    /opt/formrelay (not installed on a test machine); every other line is the shipped one."""
    if shutil.which("systemd-analyze") is None:
        _need("systemd-analyze (Debian's systemd)")
    here = str(Path(sys.executable).parent / "formrelay")
    copies = []
    for unit in units:
        text = unit.read_text()
        assert INSTALLED in text
        copy = tmp_path / unit.name
        copy.write_text(text.replace(INSTALLED, here))
        copies.append(copy)
    return subprocess.run(["systemd-analyze", "verify", *map(str, copies)], capture_output=True, text=True,
                          timeout=60)


def test_systemd_accepts_the_units_without_a_word(tmp_path: Path) -> None:
    done = verify(UNITS, tmp_path)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr


def test_verify_catches_a_mistyped_key(tmp_path: Path) -> None:
    broken = tmp_path / "broken" / "formrelay.service"
    broken.parent.mkdir()
    broken.write_text(UNITS[0].read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    done = verify([broken], tmp_path)
    assert "Unknown key" in done.stdout + done.stderr


def service(unit: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    return dict(parser["Service"])


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_units_are_hardened_and_stop_gracefully(unit: Path) -> None:
    settings = service(unit)
    assert settings["NoNewPrivileges"] == "yes" and settings["ProtectSystem"] == "strict"
    assert settings["User"] == "formrelay" and settings["StateDirectory"] == "formrelay"
    assert "FORMRELAY_QUEUE_PATH=/var/lib/formrelay/" in unit.read_text()
    assert settings["KillSignal"] == "SIGTERM" and settings["KillMode"] == "mixed"
    # serve: granian kills a worker STOP_TIMEOUT s after SIGTERM; worker: a delivery in flight may finish first.
    needed = STOP_TIMEOUT if "serve" in settings["ExecStart"] else WORKER_FINISH
    assert int(settings["TimeoutStopSec"]) >= needed + 5
