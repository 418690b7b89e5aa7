"""The snippet stays small and safe: size budget, no innerHTML/eval, and it ships inside the wheel."""
from __future__ import annotations

import gzip
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import rjsmin

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = ROOT / "static" / "formrelay.js"
BUDGET = 5 * 1024


def test_minified_and_gzipped_snippet_is_under_5_kb():
    minified = rjsmin.jsmin(SNIPPET.read_text(encoding="utf-8"))
    size = len(gzip.compress(minified.encode("utf-8"), 9))
    print(f"\nformrelay.js: {len(SNIPPET.read_bytes())} bytes raw, {len(minified)} minified, {size} minified+gzipped")
    assert size <= BUDGET


def test_snippet_never_uses_markup_injection_eval_or_cookies():
    source = SNIPPET.read_text(encoding="utf-8")
    for forbidden in (r"\.innerHTML", r"\.outerHTML", r"insertAdjacentHTML", r"\beval\(", r"new Function",
                      r"document\.cookie", r"\.style\."):
        assert not re.search(forbidden, source), forbidden
    assert 'credentials: "omit"' in source


def test_snippet_is_served_by_the_relay(client):
    answer = client.get("/static/formrelay.js")
    assert answer.status_code == 200 and answer.mimetype in ("application/javascript", "text/javascript")
    assert answer.data == SNIPPET.read_bytes()


@pytest.mark.e2e
def test_the_wheel_ships_the_snippet(tmp_path):
    # --no-build-isolation: this environment's hatchling (a test dependency), not a fresh one installed per build.
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("formrelay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "formrelay/static/formrelay.js" in names and "formrelay/web/templates/outcome.html" in names
    assert "formrelay/translations/fr/LC_MESSAGES/messages.po" in names
    # The unpacked wheel (not the checkout) speaks French: the catalogues are read from the package itself.
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    check = ("from formrelay.core import i18n; import formrelay; "
             "assert formrelay.__file__.startswith(%r), formrelay.__file__; "
             "i18n.activate('fr'); print(sorted(i18n.available()), i18n.gettext('This field is required.'))"
             % str(unpacked))
    ran = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == "['de', 'en', 'es', 'fr', 'nl', 'pt'] Ce champ est obligatoire."
