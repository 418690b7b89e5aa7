"""The relay: the Flask extension that holds one config's forms, providers and outbox, and puts the rooms of
the delivery floor together (docs/architecture.md). Each step lives in a room of its own:

- form.py: a configured form at run time (definition cache, schema, description, validation);
- screening.py: origin, spam traps, CAPTCHA, and what a caught bot is told;
- idempotency.py: repeats of an Idempotency-Key;
- dispatch.py: surge, bulkhead, breaker and the supporter's deadline; deferral into the queue;
- handler.py: the worker-side attempt at a queued job, and its settling;
- targets.py: the registry of job target kinds (primary.py, followup.py, destinations.py register there);
- capacity.py: the queue store, opened on first use, and how full it is.

This module only wires them; it decides nothing itself.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from formrelay.core.config import Config
from formrelay.core.errors import FormNotFound
from formrelay.core.i18n import gettext as _
from formrelay.core.outcome import Outcome
from formrelay.delivery import admin, retention
from formrelay.delivery import destinations, followup, primary  # noqa: F401  (each registers its kind of target)
from formrelay.delivery.attempts import guards_for
from formrelay.delivery.capacity import Outbox
from formrelay.delivery.dispatch import Dispatch, attempt_bound
from formrelay.delivery.form import Form
from formrelay.delivery.handler import Handler
from formrelay.delivery.idempotency import Idempotency
from formrelay.delivery.jobs import Job
from formrelay.delivery.screening import Screening
from formrelay.delivery.settings import QueueSettings
from formrelay.delivery.stores import Store
from formrelay.delivery.targets import Site, Targets
from formrelay.delivery.worker import Worker
from formrelay.forms.submission import Submission
from formrelay.providers import open_providers

if TYPE_CHECKING:
    from flask import Flask

EXTENSION = "formrelay"


class Relay:
    """The Flask extension: config, providers, forms and the durable queue, shared by every request."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.queue_settings: QueueSettings = config.queue or QueueSettings()
        relay = config.relay
        self.outbox = Outbox(self.queue_settings, relay.redis_url, config.source)
        self.providers = open_providers(config, lambda: self.outbox.store)
        self.forms: dict[str, Form] = {
            slug: Form(form, self.providers[form.provider], config) for slug, form in config.forms.items()
        }
        bound = attempt_bound(relay, self.providers)
        self.guards = guards_for(self.providers, relay, bound)
        self.targets = Targets(Site(config, self.forms, self.providers, self.guards, self.outbox))
        self.screening = Screening(config, self.outbox, self.guards)
        self.time_trap = self.screening.time_trap
        self.idempotency = Idempotency(self.outbox, self.queue_settings.idempotency_ttl, relay.answer_within)
        self.handler = Handler(self.forms, self.outbox, self.targets, self.screening)
        self.dispatch = Dispatch(config, self.outbox, self.guards, self.targets, self.handler, bound)

    @property
    def store(self) -> Store:
        """The outbox, opened on first use (a description touches it once, for the shared time-trap key)."""
        return self.outbox.store

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self

    def form(self, slug: str) -> Form:
        try:
            return self.forms[slug]
        except KeyError:
            raise FormNotFound(_("There is no form by this name.")) from None

    # -- a submission, as the route takes it: origin, validation (the form's), screening, then accept ---------

    def check_origin(self, form: Form, origin: str | None, referer: str | None, own: str) -> None:
        self.screening.check_origin(form, origin, referer, own)

    def screen(self, form: Form, body: Mapping[str, Any], remote_ip: str | None,
               submission: Submission | None = None) -> Outcome | None:
        return self.screening.screen(form, body, remote_ip, submission)

    def accept(self, form: Form, body: Mapping[str, Any], submission: Submission) -> Outcome:
        """Submit a screened submission; its time-trap token is freed again unless it went through."""
        return self.screening.accept(form, body, submission, self.submit)

    def submit(self, form: Form, submission: Submission) -> Outcome:
        """Deliver now, else keep it durably (202), else 503; a repeated Idempotency-Key gets the first answer."""
        return self.idempotency.submit(form.slug, submission, lambda: self.dispatch.deliver(form, submission))

    # -- the queue's side ------------------------------------------------------------------------------------

    def rule(self, form: Form, target: str = primary.TARGET) -> str:
        """For a delivery to `target` that may have arrived: "retry" or "hold" for an operator."""
        return self.targets.kind(target).rule(form, target)

    def after_delivery(self, form: Form, submission: Submission) -> None:
        """The submission's own provider has it: each kind of target makes its jobs (follow-up, also, webhooks)."""
        self.targets.delivered(form, submission)

    def work(self, job: Job) -> None:
        """One worker attempt at a claimed job (the Worker's handler)."""
        self.handler.work(job)

    def worker(self, threads: int | None = None) -> Worker:
        """The queue worker that delivers this relay's jobs (not started): threads in `serve`, or `formrelay worker`."""
        return Worker(self.store, self.handler, self.queue_settings, threads,
                      log_actions=self.log_operator_actions, sweep=self.sweep)

    def log_operator_actions(self) -> int:
        """Print into this server's log the actions the queue CLI recorded in the store (each by one process)."""
        return admin.emit_recorded(self.store)

    def sweep(self) -> int:
        """Erase what keep_done kept (or a crash left), drop old metadata: the worker calls it every 5 minutes."""
        return retention.sweep(self.store, self.queue_settings)

    def queue_stats(self, max_age: float = 0.0) -> dict[str, Any]:
        return self.outbox.stats(max_age)

    def close(self) -> None:
        self.dispatch.close()
        self.targets.close()
        for provider in self.providers.values():
            provider.close()
        self.outbox.close()


def current_relay() -> Relay:
    from flask import current_app

    relay: Relay = current_app.extensions[EXTENSION]
    return relay
