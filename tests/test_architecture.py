"""The floors hold: `lint-imports` keeps the pyproject contracts, and breaks when a provider reaches up or across."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOORS = "Floors: cli and web on top"
INDEPENDENT = "Providers are independent"


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    """Run the real `lint-imports` command on the package found in `where`, with `where`'s pyproject.toml."""
    # Where pip put the command: next to this interpreter.
    command = Path(sys.executable).with_name("lint-imports")
    if not command.exists():
        pytest.fail("lint-imports is not installed (it is in the test extras: pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(where)}  # `where`'s formrelay comes before the installed one
    return subprocess.run([str(command), "--no-cache", "--no-logo"], cwd=where, env=env, capture_output=True,
                          text=True, timeout=120)


def broken_copy(tmp_path: Path, module: str, line: str) -> Path:
    """The package and its contracts copied to tmp_path, with `line` added to formrelay/<module>."""
    shutil.copytree(ROOT / "formrelay", tmp_path / "formrelay", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "formrelay" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    return tmp_path


def test_the_package_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]
    assert len(contracts) >= 6  # floors, provider independence, sibling cycles, sandbox, parents, front door
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout


def test_a_provider_importing_the_relay_breaks_the_floors(tmp_path):
    result = lint_imports(broken_copy(tmp_path, "providers/ngp.py", "import formrelay.delivery.relay"))
    assert result.returncode != 0
    assert "formrelay.providers is not allowed to import formrelay.delivery" in " ".join(result.stdout.split())
    assert "formrelay.providers.ngp -> formrelay.delivery.relay" in result.stdout


def test_a_provider_importing_another_breaks_independence(tmp_path):
    result = lint_imports(broken_copy(tmp_path, "providers/ens.py", "import formrelay.providers.actionnetwork"))
    assert result.returncode != 0
    text = " ".join(result.stdout.split())
    assert "formrelay.providers.ens is not allowed to import formrelay.providers.actionnetwork" in text
    # The floors themselves still hold: it is the independence contract that caught it.
    assert "a lower floor never imports a higher one KEPT" in text and f"{INDEPENDENT}: no provider imports another BROKEN" in text


def test_the_queue_worker_importing_the_relay_breaks_its_contract(tmp_path):
    """The worker is handed a store and a handler: reaching for the relay (same floor) is caught all the same."""
    result = lint_imports(broken_copy(tmp_path, "delivery/worker.py", "import formrelay.delivery.relay"))
    assert result.returncode != 0
    text = " ".join(result.stdout.split())
    assert "The queue knows jobs and stores only" in text and "(it is handed a handler) BROKEN" in text
    assert "formrelay.delivery.worker is not allowed to import formrelay.delivery.relay" in text
    assert "a lower floor never imports a higher one KEPT" in text


def test_the_bottom_floor_loads_alone():
    """At run time too: importing the config pulls in nothing above core (the registry is filled from above)."""
    code = ("import sys, formrelay.core.config, formrelay.core.logs, formrelay.core.errors, formrelay.core.outcome;"
            "print(sorted(m for m in sys.modules if m.startswith('formrelay.') and not m.startswith('formrelay.core')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_reading_a_config_before_start_up_registration_says_what_to_do():
    code = "from formrelay.core.config import parse_config; parse_config({})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0
    assert "RuntimeError" in out.stderr and "import formrelay.delivery.relay" in out.stderr


def test_a_target_kind_importing_the_handler_breaks_the_rooms(tmp_path):
    """The registry's kinds sit below the handler that asks them: a kind reaching up is caught."""
    result = lint_imports(broken_copy(tmp_path, "delivery/followup.py", "import formrelay.delivery.handler"))
    assert result.returncode != 0
    text = " ".join(result.stdout.split())
    assert "The relay's rooms, inside delivery" in text
    assert "formrelay.delivery.followup is not allowed to import formrelay.delivery.handler" in text


def test_the_targets_registry_names_no_kind_and_delivery_names_no_provider():
    """A provider is named in providers/ only; a kind of target in its own module only."""
    import re

    from formrelay.providers import REGISTRY

    names = re.compile(r"\b(" + "|".join(REGISTRY) + r")\b", re.IGNORECASE)
    found = [f"{path.relative_to(ROOT)}:{number}" for path in sorted((ROOT / "formrelay" / "delivery").rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if names.search(line)]
    assert found == []
    for room in ("targets", "handler", "dispatch", "relay", "screening", "idempotency", "capacity", "form"):
        text = (ROOT / "formrelay" / "delivery" / f"{room}.py").read_text(encoding="utf-8")
        assert not [kind for kind in ('"primary"', '"followup"', '"also:"', '"webhook:"') if kind in text], room


def test_no_module_over_600_lines_and_no_class_over_300():
    """A room holds one concept and reads in one sitting (BRIEF: the architecture standard)."""
    import ast

    over: dict[str, list[str]] = {}
    for path in sorted((ROOT / "formrelay").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(ROOT))
        lines = len(text.splitlines())
        if lines > 600:
            over.setdefault(where, []).append(f"{lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300:
                over.setdefault(where, []).append(f"class {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert over == {}
