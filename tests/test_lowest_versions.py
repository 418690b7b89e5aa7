"""The lowest versions pyproject.toml allows: a venv with each direct dependency at its declared lower bound
(`pip install -e . -c constraints`) delivers submissions end to end (docs/libraries.md).

The venv is kept under /var/tmp (or $FORMRELAY_LOWEST_CACHE), keyed by the constraints, the Python version and the
checkout's path, so that a second run only reinstalls formrelay itself (seconds). It needs the package index (pip).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
BUILD = ["hatchling", "editables"]  # the build backend, in the venv: each run reinstalls formrelay without isolation

pytestmark = [pytest.mark.lowest, pytest.mark.e2e]


def lower_bounds() -> dict[str, str]:
    """name -> the version of its `>=` specifier, for every [project] dependency (each must declare one)."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = {}
    for line in dependencies:
        requirement = Requirement(line)
        lows = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        assert len(lows) == 1, f"{line}: every direct dependency declares one lower bound (>=)"
        bounds[requirement.name.lower()] = lows[0]
    return bounds


def test_every_directly_imported_distribution_is_declared():
    """A module formrelay imports must come from a declared dependency, not arrive through another's."""
    import ast
    from importlib.metadata import packages_distributions

    imported = set()
    for path in (ROOT / "formrelay").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "formrelay"}
    distributions = packages_distributions()
    needed = {distributions[name][0].lower().replace("_", "-") for name in third_party}
    declared = {name.replace("_", "-") for name in lower_bounds()}
    assert needed - declared == set(), f"imported but not declared in [project] dependencies: {needed - declared}"


def _venv(constraints: str) -> Path:
    key = hashlib.sha256(f"{constraints}\n{BUILD}\n{sys.version}\n{ROOT}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("FORMRELAY_LOWEST_CACHE", "/var/tmp"))
    venv = cache / f"formrelay-lowest-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        (venv / "constraints.txt").write_text(constraints)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *BUILD], check=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(venv / "constraints.txt"),
                               "-e", str(ROOT)], capture_output=True, text=True)
        assert done.returncode == 0, f"the lowest versions do not install together:\n{done.stderr[-3000:]}"
        (venv / ".complete").touch()
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "-e", str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def test_the_lowest_allowed_versions_deliver_submissions_end_to_end():
    bounds = lower_bounds()
    assert Version(bounds["requests"]) == Version("2.31.0")  # the reported break (issue 24): it must keep working
    constraints = "".join(f"{name}=={version}\n" for name, version in sorted(bounds.items()))
    venv = _venv(constraints)
    python = venv / "bin" / "python"
    frozen = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout.lower().replace("_", "-")
    installed = dict(line.split("==", 1) for line in frozen.split() if "==" in line)
    for name, version in bounds.items():  # what ran is what pyproject declares as the floor
        assert Version(installed.get(name.replace("_", "-"), "0")) == Version(version), (name, installed.get(name))
    done = subprocess.run([str(python), "-m", "tests.lowest_e2e"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.count("delivered") == 5, done.stdout
