"""The shipped Prometheus rules and Grafana dashboard: valid for promtool, and naming only metrics /metrics exports."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from formrelay import create_app
from tests.conftest import _need, base_config

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "formrelay-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "formrelay-dashboard.json"
METRIC = re.compile(r"\bformrelay_[a-z_]+\b")


def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name a scrape of a real app can carry: each family's TYPE line, with its type's suffixes."""
    raw = base_config()
    raw["queue"] = {"path": str(tmp_path / "queue.sqlite3"), "embedded_worker": False}
    raw["providers"]["ens"] = {"base_url": "http://127.0.0.1:9/ens/service", "api_token": "t" * 20}
    answer = create_app(raw).test_client().get("/metrics")
    assert answer.status_code == 200
    names: set[str] = set()
    for line in answer.get_data(as_text=True).splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in doc["panels"] for target in panel["targets"]]


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        _need("promtool (Debian package prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in done.stdout


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_named_is_exported(tmp_path, source):
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    named = {name for expr in exprs for name in METRIC.findall(expr)}
    assert len(named) >= 6, named  # the files really name metrics: an empty match would prove nothing
    missing = named - exported_names(tmp_path)
    assert not missing, f"{source} name metrics that /metrics does not export: {sorted(missing)}"


def test_every_rule_says_what_to_do():
    doc = yaml.safe_load(RULES.read_text())
    for rule in (r for g in doc["groups"] for r in g["rules"]):
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
