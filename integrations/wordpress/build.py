#!/usr/bin/env python3
"""Make the WordPress plugin's installable zip: formrelay-<version>.zip, with its translations compiled.

    python integrations/wordpress/build.py [--out DIR]      # default: integrations/wordpress/dist
    python integrations/wordpress/build.py --pot            # after changing a string: .pot and .po updated

The .po catalogues in formrelay/languages/ are compiled to .mo (PHP) with Babel, which formrelay already
depends on, and the block editor's strings to the JSON files WordPress gives wp.i18n. Nothing compiled
is committed. Babel's JavaScript extractor reads the PHP files as well (the gettext calls look the same),
so no WP-CLI or xgettext is needed to find the strings.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import struct
import sys
import zipfile
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "formrelay"
EDITOR_HANDLE = "formrelay-block-editor"  # the handle includes/block.php registers the editor script under


def shipped(relative: str) -> bool:
    """Source files only: no dotfiles, no caches, no compiled translations (they are made here)."""
    parts = relative.split("/")
    if any(part.startswith(".") or part == "__pycache__" for part in parts):
        return False
    return not (relative.endswith(".mo") or (relative.startswith("languages/") and relative.endswith(".json")))


# WordPress's gettext functions, as Babel keyword specs: argument positions of the msgid (and plural, context).
KEYWORDS = {"__": (1,), "_e": (1,), "esc_html__": (1,), "esc_html_e": (1,), "esc_attr__": (1,), "esc_attr_e": (1,),
            "_n": (1, 2), "_x": ((2, "c"), 1), "esc_html_x": ((2, "c"), 1), "esc_attr_x": ((2, "c"), 1)}
# What WordPress translates in block.json, with the context it uses (wp_json_file_decode's i18n schema).
BLOCK_I18N = {"title": "block title", "description": "block description", "keywords": "block keyword"}
LANGUAGES = PLUGIN / "languages"
POT = LANGUAGES / "formrelay.pot"


def version() -> str:
    match = re.search(r"^\s*\*\s*Version:\s*(\S+)", (PLUGIN / "formrelay.php").read_text(), re.M)
    if not match:
        raise SystemExit("formrelay.php has no Version: header")
    return match.group(1)


def read_catalogue(po: Path) -> Catalog:
    with po.open("rb") as handle:
        return read_po(handle, locale=po.stem.removeprefix("formrelay-"))


def mo_bytes(catalog: Catalog) -> bytes:
    """The catalogue as a .mo file that WordPress can read.

    Babel writes no hash table and puts 0 in the header's hash-table offset. WordPress's reader
    (wp-includes/pomo/mo.php) takes that offset as the end of the translations table and the start of the
    strings, so it refuses such a file and the site stays in English. `msgfmt --no-hash` writes the end of
    the two tables there, with a table size of 0; so do we (every gettext reader accepts it).
    """
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    data = bytearray(out.getvalue())
    magic, revision, count, originals, translations, hash_size, _ = struct.unpack("<7I", data[:28])
    if magic != 0x950412DE or revision != 0 or hash_size != 0 or translations != originals + 8 * count:
        raise SystemExit(f"unexpected .mo layout from Babel for {catalog.locale}")
    data[24:28] = struct.pack("<I", translations + 8 * count)
    return bytes(data)


def script_json(catalog: Catalog, locale: str) -> bytes:
    """The Jed 1.x data WordPress hands to wp.i18n.setLocaleData: the strings the JavaScript uses."""
    messages: dict[str, object] = {"": {"domain": "messages", "lang": locale,
                                        "plural-forms": catalog.plural_forms}}
    for message in catalog:
        if not message.id or message.fuzzy or not any(path.endswith(".js") for path, _ in message.locations):
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if not all(strings):
            continue
        key = f"{message.context}\u0004{ids[0]}" if message.context else ids[0]
        messages[key] = list(strings)
    data = {"domain": "messages", "locale_data": {"messages": messages}}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def sources() -> list[Path]:
    return sorted([*PLUGIN.rglob("*.php"), *PLUGIN.rglob("*.js")])


def extract_messages() -> Catalog:
    """Every string the plugin translates: its PHP and JavaScript, block.json and the plugin's description."""
    catalog = Catalog(project="formrelay", version=version(), domain="formrelay", fuzzy=False,
                      header_comment="# Translation template for the formrelay WordPress plugin "
                                     "(python integrations/wordpress/build.py --pot).\n"
                                     "# This file is distributed under the same license as the formrelay project (MIT).")
    for path in sources():
        relative = path.relative_to(PLUGIN).as_posix()
        with path.open("rb") as handle:
            for lineno, message, comments, context in extract("javascript", handle, keywords=KEYWORDS,
                                                              comment_tags=("translators:",)):
                catalog.add(message, locations=[(relative, lineno)], auto_comments=comments, context=context)
    for block in sorted(PLUGIN.rglob("block.json")):
        metadata = json.loads(block.read_text())
        relative = block.relative_to(PLUGIN).as_posix()
        for key, context in BLOCK_I18N.items():
            for text in metadata.get(key, []) if key == "keywords" else [metadata.get(key)]:
                if text:
                    catalog.add(text, locations=[(relative, 0)], context=context)
    header = re.search(r"^\s*\*\s*Description:\s*(.+)$", (PLUGIN / "formrelay.php").read_text(), re.M)
    if header:
        catalog.add(header.group(1).strip(), locations=[("formrelay.php", 0)],
                    auto_comments=["Description of the plugin"])
    return catalog


def write_catalogue(catalog: Catalog, path: Path, **options: object) -> None:
    with path.open("wb") as handle:
        write_po(handle, catalog, width=120, sort_by_file=True, **options)


def update_catalogues() -> None:
    """Write formrelay.pot from the code, and bring each .po up to date (new strings empty, changed ones fuzzy).

    Nothing is written when the strings and their places are the ones already in formrelay.pot (only the
    creation date would change)."""
    template = extract_messages()
    out = io.BytesIO()
    write_po(out, template, width=120, sort_by_file=True)
    undated = re.compile(rb'^"POT-Creation-Date: .*\n', re.M)
    if POT.exists() and undated.sub(b"", out.getvalue()) == undated.sub(b"", POT.read_bytes()):
        print(f"{POT} is current")
        return
    POT.write_bytes(out.getvalue())
    for po in sorted(LANGUAGES.glob("formrelay-*.po")):
        catalog = read_catalogue(po)
        catalog.update(template, update_header_comment=False)
        write_catalogue(catalog, po, ignore_obsolete=True)
        print(po)


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"formrelay-{version()}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(PLUGIN.rglob("*")):
            relative = path.relative_to(PLUGIN).as_posix()
            if path.is_file() and shipped(relative):
                archive.write(path, f"formrelay/{relative}")
        for po in sorted((PLUGIN / "languages").glob("formrelay-*.po")):
            locale = po.stem.removeprefix("formrelay-")
            catalog = read_catalogue(po)
            archive.writestr(f"formrelay/languages/{po.stem}.mo", mo_bytes(catalog))
            archive.writestr(f"formrelay/languages/formrelay-{locale}-{EDITOR_HANDLE}.json", script_json(catalog, locale))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "dist", help="where to write the zip")
    parser.add_argument("--pot", action="store_true", help="update languages/formrelay.pot and the .po files")
    args = parser.parse_args(argv)
    if args.pot:
        update_catalogues()
        return 0
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
