"""`formrelay breaker reset PROVIDER` (close a provider's circuit breaker in every process) and `formrelay alerts
test` (send one test message through each [alerts] channel, to check the settings before a night needs them)."""
from __future__ import annotations

import time

import click

from formrelay.cli_queue import config_option, opened
from formrelay.core.suggest import did_you_mean


@click.group()
def breaker() -> None:
    """Circuit breakers: one per provider, in every server and worker process."""


@breaker.command("reset")
@click.argument("provider")
@config_option
def breaker_reset(provider: str, config_path: str | None) -> None:
    """Close PROVIDER's breaker in every process sharing the queue (within a second), after a fix.

    The next calls go to the provider at once instead of waiting for the breaker's own probe; if it still
    fails, the breaker opens again after [relay] breaker_failures failures.
    """
    from formrelay.alerts import breakers
    from formrelay.delivery import admin

    with opened(config_path) as relay:
        if provider not in relay.providers:
            raise click.ClickException(f"no provider {provider!r} in the config"
                                       f"{did_you_mean(provider, relay.providers)}")
        now = time.time()
        breakers.ask_reset(relay.store, provider, now)
        forms = {slug for slug, form in relay.forms.items() if form.config.provider == provider}
        due = breakers.due_now(relay.store, forms, now)
        admin.audit(relay.store, "breaker-reset", [provider], jobs_due_now=due)
    click.echo(f"asked every process to close the circuit breaker for {provider}; {due} submission(s) that waited "
               "behind it are due now; /readyz shows the breaker closed within seconds")


@click.group("alerts")
def alerts_group() -> None:
    """The relay's own alerts ([alerts]: email, chat, signed webhook)."""


@alerts_group.command("test")
@config_option
def alerts_test(config_path: str | None) -> None:
    """Send one test message through each channel [alerts] names, now, and say how each went."""
    from formrelay.alerts.senders import Message, SendFailed, senders
    from formrelay.alerts.settings import AlertsSettings

    with opened(config_path) as relay:
        settings = relay.config.alerts or AlertsSettings()
    channels = senders(settings)
    if not channels:
        raise click.ClickException("[alerts] names no channel: set email_to + smtp_url, slack_webhook_url or "
                                   "webhook_url + webhook_secret")
    message = Message("test", "", "firing", "[formrelay] test alert",
                      "A test from `formrelay alerts test`: this channel works. Nothing is wrong.")
    failed = 0
    for channel in channels:
        try:
            channel.send(message)
            click.echo(f"{channel.name}: sent")
        except SendFailed as exc:
            failed += 1
            click.echo(f"{channel.name}: failed ({exc})", err=True)
    if failed:
        raise click.ClickException(f"{failed} of {len(channels)} channel(s) failed")
