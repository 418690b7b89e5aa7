"""The CLI reference page (mkdocs-click, from the click commands) lists every command and every option."""
from __future__ import annotations

import html
import re
from collections.abc import Iterator

import click

from formrelay.cli import main


def commands(group: click.Command = main, path: tuple[str, ...] = ("formrelay",)) -> Iterator[tuple[str, click.Command]]:
    yield " ".join(path), group
    if isinstance(group, click.Group):
        for name, command in sorted(group.commands.items()):
            yield from commands(command, (*path, name))


def sections(page: str) -> dict[str, str]:
    """The page's text by the id of each command's heading (mkdocs-click: "formrelay-queue-list")."""
    parts = re.split(r'<h\d id="([^"]+)"', page)
    return {parts[i]: html.unescape(re.sub(r"<[^>]+>", " ", parts[i + 1])) for i in range(1, len(parts) - 1, 2)}


def missing(found: dict[str, str]) -> list[str]:
    """What the page lacks: a command's section, an option, an argument, or the first line of its help."""
    out = []
    for name, command in commands():
        anchor = name.replace(" ", "-")
        if anchor not in found:
            out.append(f"{name}: no section on the CLI page")
            continue
        text = found[anchor]
        for param in command.params:
            if isinstance(param, click.Option):
                out += [f"{name}: option {opt}" for opt in param.opts + param.secondary_opts if opt not in text]
            elif isinstance(param, click.Argument) and (param.human_readable_name or "").upper() not in text.upper():
                out.append(f"{name}: argument {param.name}")
        if command.help:
            first = " ".join(command.help.strip().splitlines()[0][:40].split())
            if first not in " ".join(text.split()):
                out.append(f"{name}: help text")
    return out


def test_every_command_and_option_is_on_the_cli_page(site):
    found = sections((site.path / "reference" / "cli.html").read_text())
    names = [name for name, _ in commands()]
    assert "formrelay queue list" in names and "formrelay serve" in names and len(names) >= 14
    assert missing(found) == []
    assert "Sentinel" not in (site.path / "reference" / "cli.html").read_text()  # click's "no default" marker


def test_the_check_notices_an_option_the_page_lacks(site, monkeypatch):
    found = sections((site.path / "reference" / "cli.html").read_text())
    listing = main.commands["queue"].commands["list"]  # type: ignore[attr-defined]
    monkeypatch.setattr(listing, "params", [*listing.params, click.Option(["--no-such-option"])])
    assert missing(found) == ["formrelay queue list: option --no-such-option"]
