"""The WordPress plugin's files: PHP that parses, complete translations, block.json, readme.txt and the zip.

What it does on a real WordPress is in tests/browser/test_wordpress.py.
"""
from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from tests.conftest import _need
from tests.wordpress import BUILD_SCRIPT, PLUGIN_SOURCE, build_plugin

pytestmark = pytest.mark.wordpress

LANGUAGES = ("fr_FR", "es_ES", "de_DE", "pt_BR", "nl_NL")  # the relay's languages but English
PHP_FILES = sorted(PLUGIN_SOURCE.rglob("*.php"))
GETTEXT_CALL = re.compile(r"\b(?:__|_e|_n|_x|esc_html__|esc_html_e|esc_attr__|esc_attr_e|esc_html_x|esc_attr_x)\(")
STRING = r"'(?:[^'\\]|\\.)*'"
WELL_FORMED = re.compile(rf"\b(?:__|_e|_n|_x|esc_html__|esc_html_e|esc_attr__|esc_attr_e|esc_html_x|esc_attr_x)\(\s*"
                         rf"{STRING}\s*,\s*(?:{STRING}\s*,\s*)?(?:\$\w+\s*,\s*)?'formrelay'\s*\)")


def load_build():
    spec = importlib.util.spec_from_file_location("formrelay_wordpress_build", BUILD_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", PHP_FILES, ids=lambda p: p.relative_to(PLUGIN_SOURCE).as_posix())
def test_every_php_file_parses(path):
    php = shutil.which("php")
    if php is None:
        _need("php-cli")
    done = subprocess.run([php, "-l", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", PHP_FILES, ids=lambda p: p.relative_to(PLUGIN_SOURCE).as_posix())
def test_every_php_file_stops_when_called_directly(path):
    """Requested by URL outside WordPress, a file must do nothing (uninstall.php: only when uninstalling)."""
    text = path.read_text()
    guard = "WP_UNINSTALL_PLUGIN" if path.name == "uninstall.php" else "ABSPATH"
    if path.name == "index.php":
        assert text.strip() == "<?php\n// Silence is golden.".strip()
    else:
        assert re.search(rf"if \( ! defined\( '{guard}' \) \) \{{\s*exit;", text), path


def test_every_translated_string_names_the_plugins_text_domain():
    """Each gettext call is literal strings then 'formrelay': one the extractor cannot read, or with another
    domain, would stay in English on every site."""
    for path in [*PHP_FILES, *PLUGIN_SOURCE.rglob("*.js")]:
        text = path.read_text()
        calls = GETTEXT_CALL.findall(text)
        complete = WELL_FORMED.findall(text)
        assert len(calls) == len(complete), f"{path.name}: {len(calls)} gettext calls, {len(complete)} well formed"


def test_the_template_lists_every_string_of_the_plugin():
    """formrelay.pot is current: `python integrations/wordpress/build.py --pot` was run after the last change."""
    build = load_build()
    in_code = {(m.context, m.id) for m in build.extract_messages() if m.id}
    with build.POT.open("rb") as handle:
        in_template = {(m.context, m.id) for m in read_po(handle) if m.id}
    assert in_code == in_template, f"missing: {in_code - in_template}; stale: {in_template - in_code}"
    assert ("block title", "formrelay form") in in_code  # block.json's strings are in it, with WordPress's context
    assert len(in_code) > 50


@pytest.mark.parametrize("locale", LANGUAGES)
def test_every_string_is_translated_in_every_language(locale):
    build = load_build()
    catalog = build.read_catalogue(build.LANGUAGES / f"formrelay-{locale}.po")
    expected = {(m.context, m.id) for m in build.extract_messages() if m.id}
    found = {(m.context, m.id): m for m in catalog if m.id}
    assert set(found) == expected
    assert catalog.num_plurals == 2
    for key, message in found.items():
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings) and not message.fuzzy, f"{locale}: {key} is untranslated or fuzzy"
        sources = message.id if isinstance(message.id, tuple) else (message.id,)
        wanted = sorted(re.findall(r"%(?:\d\$)?[sd]", sources[-1]))
        for text in strings:
            assert sorted(re.findall(r"%(?:\d\$)?[sd]", text)) == wanted, f"{locale}: {key} loses a placeholder"
            if "%" in sources[0] and re.search(r"%\d\$", sources[0]):
                assert not re.search(r"%[sd]", text), f"{locale}: {key} mixes numbered and plain placeholders"


def test_the_zip_holds_the_plugin_with_its_translations_compiled(tmp_path):
    archive = build_plugin(tmp_path)
    version = re.search(r"Version:\s*(\S+)", (PLUGIN_SOURCE / "formrelay.php").read_text()).group(1)
    assert archive.name == f"formrelay-{version}.zip"
    with zipfile.ZipFile(archive) as plugin:
        names = set(plugin.namelist())
        assert all(name.startswith("formrelay/") for name in names)
        for needed in ("formrelay.php", "readme.txt", "uninstall.php", "blocks/form/block.json",
                       "blocks/form/editor.js", "languages/formrelay.pot"):
            assert f"formrelay/{needed}" in names
        for locale in LANGUAGES:
            mo = plugin.read(f"formrelay/languages/formrelay-{locale}.mo")
            # WordPress reads the strings from the hash table's offset on (wp-includes/pomo/mo.php).
            count, _, translations, _, hash_at = (int.from_bytes(mo[i:i + 4], "little") for i in range(8, 28, 4))
            assert hash_at == translations + 8 * count
            catalog = read_mo(io.BytesIO(mo))
            assert catalog.get("This form needs JavaScript.").string
            script = json.loads(plugin.read(f"formrelay/languages/formrelay-{locale}-formrelay-block-editor.json"))
            messages = script["locale_data"]["messages"]
            assert messages["Form name on the relay"][0] and "This form needs JavaScript." not in messages
        assert not [name for name in names if "/." in name or name.endswith((".pyc", ".py"))]
    french = read_mo(io.BytesIO(zipfile.ZipFile(archive).read("formrelay/languages/formrelay-fr_FR.mo")))
    assert french.get("This form needs JavaScript.").string == "Ce formulaire nécessite JavaScript."


def test_the_build_script_runs_as_a_maintainer_runs_it(tmp_path):
    done = subprocess.run([sys.executable, str(BUILD_SCRIPT), "--out", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith(".zip") and Path(done.stdout.strip()).exists()


def test_block_json_is_an_api_version_3_block_rendered_by_the_server():
    block = json.loads((PLUGIN_SOURCE / "blocks" / "form" / "block.json").read_text())
    assert block["apiVersion"] == 3 and block["name"] == "formrelay/form" and block["textdomain"] == "formrelay"
    assert "render" not in block  # rendered by the render_callback (includes/block.php): the shortcode's markup
    registered = (PLUGIN_SOURCE / "includes" / "block.php").read_text()
    assert f"'{block['editorScript']}'" in registered and "'render_callback' => 'formrelay_render_block'" in registered
    editor = (PLUGIN_SOURCE / "blocks" / "form" / "editor.js").read_text()
    for attribute in block["attributes"]:
        assert f"'{attribute}'" in registered or f"attributes.{attribute}" in editor, attribute


def test_readme_txt_follows_the_wordpress_org_format():
    readme = (PLUGIN_SOURCE / "readme.txt").read_text()
    header = (PLUGIN_SOURCE / "formrelay.php").read_text()
    assert readme.startswith("=== formrelay ===\n")
    fields = dict(re.findall(r"^([A-Z][A-Za-z ]+):\s*(.+)$", readme.split("\n\n", 1)[0], re.M))
    for name in ("Contributors", "Tags", "Requires at least", "Tested up to", "Requires PHP", "Stable tag",
                 "License", "License URI"):
        assert fields.get(name), name
    assert len(fields["Tags"].split(",")) <= 5
    for name in ("Version", "Requires at least", "Requires PHP"):
        in_header = re.search(rf"^\s*\*\s*{name}:\s*(\S+)", header, re.M).group(1)
        assert fields["Stable tag" if name == "Version" else name] == in_header
    short = readme.split("\n\n", 2)[1]
    assert "\n" not in short.strip() and len(short) <= 150  # the short description: one line, 150 characters
    for section in ("Description", "Installation", "Frequently Asked Questions", "Changelog"):
        assert f"\n== {section} ==\n" in readme
    assert "allowed_origins" in readme  # the one change the relay needs
