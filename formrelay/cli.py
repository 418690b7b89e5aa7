"""The `formrelay` command: serve, check, demo, worker, healthcheck."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

import click

from formrelay import alerts  # also registers [alerts] with the config, before any command reads one
from formrelay.cli_alerts import alerts_group, breaker
from formrelay.cli_export import queue  # the queue group, with `export` registered on it
from formrelay.core import logs
from formrelay.core.config import ConfigError, load_config
from formrelay.core.version import __version__

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
HEALTH_BODY_MAX = 65536  # the detailed /readyz view fits; a stranger's endless answer is not read to the end
HEALTHY = ("ok", "degraded")  # degraded: submissions are still accepted and nothing is lost


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group()
@click.version_option(__version__, prog_name="formrelay")  # the number /readyz reports, from one place
def main() -> None:
    """formrelay: validate form submissions and relay them to your CRM."""


def _serve_demo(app: Any, host: str, port: int, threads: int = 8) -> None:
    """The demo's server: waitress in this process (the sandbox runs in threads beside it), tuned like serve."""
    import waitress  # type: ignore[import-untyped]

    from formrelay.web.serving import ServeError, check_port

    try:
        check_port(host, port)
    except ServeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"formrelay listening on http://{host}:{port}/", err=True)
    # Idle connections closed after 30 s and up to 1,000 held; proxy headers left for the app's trusted_proxies.
    waitress.serve(app, host=host, port=port, threads=threads, ident="formrelay", connection_limit=1000,
                   channel_timeout=30, clear_untrusted_proxy_headers=False)


# A container image or a platform sets the address once in the environment; `formrelay healthcheck` reads the same.
host_option = click.option("--host", default=DEFAULT_HOST, show_default=True, envvar="FORMRELAY_HOST",
                           help="address to listen on  [env: FORMRELAY_HOST]")
port_option = click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535),
                           envvar="FORMRELAY_PORT", help="port  [env: FORMRELAY_PORT]")


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML file (default: $FORMRELAY_CONFIG or ./formrelay.toml)")
@host_option
@port_option
@click.option("--workers", default=None, type=click.IntRange(1, 64),
              help="worker processes  [default: $WEB_CONCURRENCY, else 2 with redis_url, else 1]")
@click.option("--threads", default=None, type=click.IntRange(1, 256),
              help="threads per worker for requests  [default: $FORMRELAY_THREADS, else 8]")
def serve(config_path: str | None, host: str, port: int, workers: int | None, threads: int | None) -> None:
    """Run the relay (granian: several processes, thousands of connections, bounded timeouts)."""
    from formrelay.web.serving import ServeError
    from formrelay.web.serving import serve as run

    threads = threads or _env_int("FORMRELAY_THREADS", 8)
    try:
        run(config_path, host, port, workers or _env_int("WEB_CONCURRENCY", 0) or None, threads)
    except (ConfigError, ServeError) as exc:
        raise click.ClickException(str(exc)) from None


def _env_int(name: str, default: int) -> int:
    import os

    value = os.environ.get(name, "")
    try:
        return max(1, int(value)) if value else default
    except ValueError:
        raise click.ClickException(f"{name}={value!r} is not a whole number") from None


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--strict", is_flag=True, help="the queue storage's warnings count as problems (a Redis that could lose the queue)")
def check(config_path: str | None, strict: bool) -> None:
    """Validate the config, load every form's schema and print its fields."""
    from formrelay.core.errors import ProviderError
    from formrelay.delivery.relay import Relay

    _setup_logging("WARNING")
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    relay = Relay(config)
    # check leaves no trace: tokens are not shared through the queue store, so no queue file or key is made.
    for provider in relay.providers.values():
        for token in provider.shared_tokens():
            token.store = None
    problems = 0
    click.echo(f"config {config.source}: {len(config.forms)} form(s), providers: {', '.join(sorted(config.providers)) or 'none'}")
    if config.relay.redis_url:
        problems += _check_redis(config.relay.redis_url, strict)
    problems += _check_rate_limit_storage(config)
    for slug, form in relay.forms.items():
        click.echo(f"\n[{slug}] provider={form.config.provider}")
        started = time.perf_counter()
        try:
            form.loaded(wait=None)  # the whole fetch, however slow: check is not a supporter waiting
            described = form.describe()
            answered = form.provider.probe(form.config)
        except ProviderError as exc:
            problems += 1
            click.echo(f"  ERROR: {logs.printable(str(exc))}")  # a CRM's words: escaped
            hint = _hint(str(exc), form)
            if hint:
                click.echo(f"  hint: {hint}")
            continue
        click.echo(f"  provider: {answered} in {(time.perf_counter() - started) * 1000:.0f} ms")
        click.echo(f"  title: {described['title']}")
        for f in described["fields"]:
            flags = ["required" if f["required"] else "optional"]
            if "max_length" in f:
                flags.append(f"max {f['max_length']}")
            if "options" in f:
                flags.append(f"{len(f['options'])} options")
            click.echo(f"  - {f['name']:<28} {f['type']:<9} {', '.join(flags):<24} {f['label']}")
        mapping = form.person_mapping  # where an OSDI body's parts land (README: Coming from jquery-osdi)
        mapped = ", ".join(f"{key} -> {name}" for key, name in mapping.fields.items())
        click.echo(f"  OSDI person: {mapped or 'nothing'}; other custom fields -> {mapping.custom or 'dropped'}")
        for problem in [*form.provider.check(form.config), *form.problems()]:
            problems += 1
            click.echo(f"  ERROR: {logs.printable(str(problem))}")
        for warning in form.provider.warnings(form.config):
            click.echo(f"  warning: {logs.printable(str(warning))}")
        problems += _check_destinations(relay, form)
    relay.close()
    if problems:
        raise click.ClickException(f"{problems} problem(s) found")
    click.echo("\nok")


def _check_redis(url: str, strict: bool = False) -> int:
    """Print what Redis says about keeping queued submissions; 1 when it does not answer (or, strict, warns)."""
    from formrelay.delivery.storage_check import inspect_redis

    report = inspect_redis(url)
    if report.error:
        click.echo(f"\nredis {report.where}: ERROR: {report.error}")
        return 1
    facts = report.facts
    click.echo(f"\nredis {report.where}: ok (appendonly {'yes' if facts['appendonly'] else 'no'}, "
               f"maxmemory-policy {facts['maxmemory_policy']})")
    for warning in report.warnings:
        click.echo(f"  WARNING: {warning}")
    return len(report.warnings) if strict else 0


def _check_rate_limit_storage(config: Any) -> int:
    """Where the per-client counts live; an error when that Redis is full or away (see docs/security.md)."""
    from formrelay.web.limiting import inspect

    where, errors, warnings = inspect(config)
    click.echo(f"\nrate limits: {where}" + ("" if errors else ": ok"))
    for error in errors:
        click.echo(f"  ERROR: {error}")
    for warning in warnings:
        click.echo(f"  WARNING: {warning}")
    return len(errors)


def _check_destinations(relay: Any, form: Any) -> int:
    """Print the form's `also` forms (what the person model fills) and webhooks (does the host answer a TCP
    connect; nothing is sent). The number of problems found. Never a URL path or a secret: host and name only."""
    from formrelay.core.errors import ProviderError
    from formrelay.delivery.destinations import coverage
    from formrelay.webhooks import reachable

    problems = 0
    for slug in form.config.also:
        other = relay.forms[slug]
        try:
            filled, never, sometimes = coverage(form, other)
        except ProviderError as exc:
            problems += 1
            click.echo(f"  also {slug}: ERROR: {exc}")
            continue
        click.echo(f"  also {slug} ({other.config.provider}): the person model fills {', '.join(filled) or 'nothing'}")
        if never:
            problems += 1
            click.echo(f"  ERROR: also {slug}: required there, but nothing of this form maps to it: "
                       f"{', '.join(never)}; every such job would be a dead letter (see [forms.{slug}.person])")
        if sometimes:
            click.echo(f"  note: also {slug}: required there, filled only when given here: {', '.join(sometimes)}; "
                       "submissions without it go to the dead letters for that form")
    for hook in form.config.webhooks:
        ok, said = reachable(hook.url, relay.config.relay.connect_timeout)
        data = "with personal data" if hook.include_personal_data else "without personal data"
        where = hook.host if hook.host == hook.name else f"{hook.name} ({hook.host})"
        click.echo(f"  webhook {where} [{', '.join(hook.events)}; {data}]: {logs.printable(str(said))}")
        if not ok:
            problems += 1
            click.echo(f"  ERROR: webhook {where} {logs.printable(str(said))}; its events wait in the queue until it answers")
    return problems


def _hint(problem: str, form: Any) -> str | None:
    """The usual mistake behind a failed check, in words an operator can act on."""
    settings = form.provider.settings
    url = getattr(settings, "base_url", None) or getattr(settings, "users_url", None) or "the provider"
    if any(word in problem for word in ("connection failed", "connection timed out", "no answer within")):
        extra = (" For ENS, the account's data centre decides the host: ca.engagingnetworks.app, "
                 "us.engagingnetworks.app or us2.engagingnetworks.app." if form.config.provider == "ens" else "")
        return f"{url} did not answer from this server: check base_url, DNS and outbound firewall rules.{extra}"
    if "refused" in problem or "HTTP 401" in problem or "HTTP 403" in problem:
        return ("the credentials were refused: check the key in the environment variable the config names"
                + (", and that this server's address is on the API user's whitelist" if form.config.provider == "ens"
                   else "") + ".")
    if "not found" in problem or "no page" in problem or "HTTP 404" in problem:
        return "check the form's id in the config against the CRM."
    if "has no supporter field or question" in problem:
        return "field names must be the account's own, spelled exactly (see the CRM's field list)."
    return None


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int)
def demo(host: str, port: int) -> None:
    """Run with built-in sandbox providers and an example page: no accounts, no network."""
    from formrelay.web.app import start_embedded_worker
    from formrelay.web.demo import create_demo_app

    _setup_logging()
    app, sandbox = create_demo_app()
    worker = start_embedded_worker(app)
    click.echo(f"sandbox providers on {sandbox.url} (loopback only)", err=True)
    click.echo(f"open http://{host}:{port}/ to try the example forms", err=True)
    try:
        _serve_demo(app, host, port)
    finally:
        if worker is not None:
            worker.stop()
        sandbox.stop()


def _relay(config_path: str | None) -> Any:
    from formrelay.delivery.relay import Relay

    try:
        return Relay(load_config(config_path))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None)
@click.option("--threads", default=None, type=int, help="worker threads (default: [queue] workers)")
def worker(config_path: str | None, threads: int | None) -> None:
    """Deliver queued submissions (for hosts that run the web part with embedded_worker = false)."""
    import signal
    import threading

    relay = _relay(config_path)
    logs.configure(relay.config.logging.format, relay.config.logging.level)
    logs.show_personal_data(relay.config.logging.personal_data)
    logs.add_secrets(relay.config.secrets)
    running = relay.worker(threads).start()
    alerts.start(relay)  # [alerts] and `formrelay breaker reset` here too (docs/alerts.md)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"formrelay worker: {running.threads} thread(s)", err=True)
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    running.stop()
    relay.close()


@main.command()
@host_option
@port_option
@click.option("--live", is_flag=True, help="ask /healthz (the process answers) instead of /readyz")
@click.option("--timeout", default=3.0, show_default=True, type=click.FloatRange(0.1, 60), help="seconds")
def healthcheck(host: str, port: int, live: bool, timeout: float) -> None:
    """Exit 0 if the relay on this host answers /readyz with ok or degraded, else 1 (for HEALTHCHECK, probes)."""
    import http.client
    import json

    # http.client, not requests or urllib: no proxy from the environment, nothing to import beyond the stdlib.
    path = "/healthz" if live else "/readyz"
    if host in ("0.0.0.0", "::"):  # serve's "every interface" (as in the image) is reached on loopback
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    where = f"http://{f'[{host}]' if ':' in host else host}:{port}{path}"
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": f"formrelay-healthcheck/{__version__}"})
        answer = connection.getresponse()
        body = answer.read(HEALTH_BODY_MAX)
        code = answer.status
    except (OSError, http.client.HTTPException) as exc:
        click.echo(f"unhealthy: {where}: {exc.__class__.__name__}: {str(exc)[:200]}", err=True)
        sys.exit(1)
    finally:
        connection.close()
    try:
        said = json.loads(body)
        status = str(said.get("status", "?"))[:40]
        problems = [str(p)[:200] for p in said.get("problems", [])][:10]
    except (ValueError, AttributeError, TypeError):
        status, problems = "not a formrelay answer", []
    detail = f"{where}: HTTP {code} {status}" + (f" ({'; '.join(problems)})" if problems else "")
    if code != 200 or status not in HEALTHY:
        click.echo(f"unhealthy: {detail}", err=True)
        sys.exit(1)
    click.echo(detail)


main.add_command(queue)
main.add_command(breaker)
main.add_command(alerts_group)


if __name__ == "__main__":
    main()
