"""mkdocs hook: the reference pages generated from the code at build time, so that they cannot drift from it.

A page asks for a generated part with a marker line:

    <!-- generated: configuration -->   every config table and key (docs/hooks/config_reference.py)
    <!-- generated: http-api -->        the OpenAPI document as tables (docs/hooks/openapi_reference.py)

and reference/openapi.json is added to the site: the document itself, for tools. The CLI reference is made by
the mkdocs-click extension from the click commands (docs/reference/cli.md).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))

import config_reference  # noqa: E402
import openapi_reference  # noqa: E402

MARKERS = {
    "<!-- generated: configuration -->": config_reference.markdown,
    "<!-- generated: http-api -->": openapi_reference.markdown,
}


def on_files(files: Files, config: Any, **_: Any) -> Files:
    files.append(File.generated(config, "reference/openapi.json", content=openapi_reference.json_text()))
    return files


def on_page_content(html: str, page: Any, **_: Any) -> str:
    """mkdocs-click prints click 8.3's marker for "no default" as `Sentinel.UNSET`: show nothing instead."""
    return html.replace("<code>Sentinel.UNSET</code>", "").replace("Sentinel.UNSET", "")


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
