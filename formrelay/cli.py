"""The `formrelay` command: serve, check, demo."""
from __future__ import annotations

import logging
import sys
from typing import Any

import click

from formrelay.config import ConfigError, load_config

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group()
@click.version_option(package_name="formrelay")
def main() -> None:
    """formrelay: validate form submissions and relay them to your CRM."""


def _serve(app: Any, host: str, port: int, threads: int = 8) -> None:
    import waitress

    click.echo(f"formrelay listening on http://{host}:{port}/", err=True)
    waitress.serve(app, host=host, port=port, threads=threads, ident="formrelay")


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML file (default: $FORMRELAY_CONFIG or ./formrelay.toml)")
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int)
def serve(config_path: str | None, host: str, port: int, threads: int) -> None:
    """Run the relay (waitress, a production WSGI server)."""
    from formrelay.app import create_app

    _setup_logging()
    try:
        app = create_app(load_config(config_path))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    _serve(app, host, port, threads)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
def check(config_path: str | None) -> None:
    """Validate the config, load every form's schema and print its fields."""
    from formrelay.errors import ProviderError
    from formrelay.relay import Relay

    _setup_logging("WARNING")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    relay = Relay(config)
    problems = 0
    click.echo(f"config {config.source}: {len(config.forms)} form(s), providers: {', '.join(sorted(config.providers)) or 'none'}")
    for slug, form in relay.forms.items():
        click.echo(f"\n[{slug}] provider={form.config.provider}")
        try:
            described = form.describe()
        except ProviderError as exc:
            problems += 1
            click.echo(f"  ERROR: {exc}")
            continue
        click.echo(f"  title: {described['title']}")
        for f in described["fields"]:
            flags = ["required" if f["required"] else "optional"]
            if "max_length" in f:
                flags.append(f"max {f['max_length']}")
            if "options" in f:
                flags.append(f"{len(f['options'])} options")
            click.echo(f"  - {f['name']:<28} {f['type']:<9} {', '.join(flags):<24} {f['label']}")
        for problem in form.provider.check(form.config):
            problems += 1
            click.echo(f"  ERROR: {problem}")
    relay.close()
    if problems:
        raise click.ClickException(f"{problems} problem(s) found")
    click.echo("\nok")


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
def demo(host: str, port: int) -> None:
    """Run with built-in sandbox providers and an example page: no accounts, no network."""
    from formrelay.demo import create_demo_app

    _setup_logging()
    app, sandbox = create_demo_app()
    click.echo(f"sandbox providers on {sandbox.url} (loopback only)", err=True)
    click.echo(f"open http://{host}:{port}/ to try the example forms", err=True)
    try:
        _serve(app, host, port)
    finally:
        sandbox.stop()


if __name__ == "__main__":
    main()
