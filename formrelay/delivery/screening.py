"""Screening: whether a submission comes from a person on an allowed site, before anything is delivered.

The origin check (403), the spam traps (honeypot, time-trap token used once), the CAPTCHA, and the answers
for what is caught: a bot gets the answer a person would get now (the last one a person got, shared through
the store), so it cannot tell it was caught; a person the traps cannot vouch for is asked to send again.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from formrelay import abuse
from formrelay.abuse import CAPTCHA_MESSAGE, RELOAD_MESSAGE, TOO_FAST_MESSAGE, TimeTrap, TrapCheck
from formrelay.core import logs
from formrelay.core.config import Config
from formrelay.core.errors import Forbidden
from formrelay.core.i18n import gettext as _
from formrelay.core.outcome import Outcome
from formrelay.delivery.answers import QUEUED_MESSAGE
from formrelay.delivery.attempts import OPEN, Guard
from formrelay.delivery.capacity import Outbox
from formrelay.delivery.form import Form
from formrelay.forms.submission import Submission

log = logging.getLogger(__name__)

SHARED_KEY_TTL = 100 * 365 * 24 * 3600.0  # for good: a new key would make every open page's token unverifiable
ANSWER_TTL = 30 * 24 * 3600.0  # how long the answer shown to bots outlives the last person's submission


class Screening:
    """The checks a submission passes before delivery, and what a caught one is told."""

    def __init__(self, config: Config, outbox: Outbox, guards: Mapping[str, Guard]) -> None:
        self.config = config
        self.outbox = outbox
        self.guards = guards
        relay = config.relay
        self.time_trap = TimeTrap(relay.secret_key, relay.time_trap_min, relay.time_trap_max,
                                  shared_key=self._shared_time_trap_key)

    def _shared_time_trap_key(self) -> str:
        """Without [relay] secret_key, one random key kept in the queue store: every worker (SQLite, one host) or
        every host (Redis) that shares the queue signs and verifies every time-trap token with the same key."""
        key = self.outbox.store.kv_add("relay:time-trap-key", secrets.token_urlsafe(32), SHARED_KEY_TTL)
        logs.add_secrets([key])
        return key

    def check_origin(self, form: Form, origin: str | None, referer: str | None, own: str) -> None:
        """403 for a browser post from a site the form does not allow (Origin, else Referer)."""
        allowed = self.config.origins_for(form.config)
        if not abuse.origin_allowed(origin, referer, own, allowed, self.config.relay.require_origin):
            abuse.count(form.slug, "origin not allowed")
            log.info("form %s: refused a post from an origin it does not allow", form.slug)
            raise Forbidden(_("This form does not accept submissions from this site."))

    def screen(self, form: Form, body: Mapping[str, Any], remote_ip: str | None,
               submission: Submission | None = None) -> Outcome | None:
        """None for a person; for a bot the answer a person would get, with nothing delivered.

        A person the traps cannot vouch for (too fast, a page open for days) is asked to send again, never
        silently dropped. The token's single use is claimed last, once nothing else can refuse the submission;
        `accept` frees it again when the submission does not go through, so the person can send it again.
        """
        honeypot = body.get("_hp")
        started = body.get("_started")
        check = TrapCheck("honeypot filled", fake=True) if honeypot not in (None, "", []) else \
            self.time_trap.check(form.slug, started if isinstance(started, str) else None, form.config.require_started)
        if check.reason:
            abuse.count(form.slug, check.reason)
            log.info("form %s: %s a submission (%s)", form.slug, "discarded" if check.fake else "asked again for",
                     check.reason)
            if check.fake:
                return self.bot_answer(form)
            if check.wait is not None:
                return Outcome("rate_limited", message=_(TOO_FAST_MESSAGE), retry_after=max(1, math.ceil(check.wait)))
            return Outcome("invalid", message=_(RELOAD_MESSAGE), errors={"_started": [_(RELOAD_MESSAGE)]})
        refused = self._check_captcha(form, body, remote_ip)
        if refused is not None:
            return refused
        if check.nonce and not self._use_once(form, check, submission):
            abuse.count(form.slug, "time-trap token reused")
            log.info("form %s: discarded a submission (time-trap token reused)", form.slug)
            return self.bot_answer(form)
        return None

    def _use_once(self, form: Form, check: TrapCheck, submission: Submission | None) -> bool:
        """Claim the token's nonce in the shared store; True unless another submission used it first.

        The same submission sent again (the same idempotency key: a retry after a lost answer) may reuse it:
        the idempotency record answers that one.
        """
        owner = (submission.idempotency_key or submission.id) if submission is not None else secrets.token_hex(8)
        try:
            return self.outbox.store.kv_add(f"started:{check.nonce}", owner, check.ttl) == owner
        except Exception as exc:  # the store cannot say: a person is never dropped for that
            log.warning("form %s: cannot record a time-trap token's use (%s); accepting the submission", form.slug,
                        exc.__class__.__name__)
            return True

    def accept(self, form: Form, body: Mapping[str, Any], submission: Submission,
               submit: Callable[[Form, Submission], Outcome]) -> Outcome:
        """Submit a screened submission; then free its time-trap token unless it went through, and remember the
        answer for the bots."""
        try:
            outcome = submit(form, submission)
        except BaseException:
            self._free_token(form, body, submission)
            raise
        if outcome.ok:
            self.remember_answer(form, outcome)
        else:
            self._free_token(form, body, submission)
        return outcome

    def _free_token(self, form: Form, body: Mapping[str, Any], submission: Submission) -> None:
        started = body.get("_started")
        if not isinstance(started, str) or not started:
            return
        check = self.time_trap.check(form.slug, started, False)
        if check.nonce:
            try:
                self.outbox.store.kv_delete(f"started:{check.nonce}", submission.idempotency_key or submission.id)
            except Exception as exc:  # storage away: the token stays used, as a bot's replay would find it
                log.warning("form %s: cannot free a time-trap token (%s)", form.slug, exc.__class__.__name__)

    def remember_answer(self, form: Form, outcome: Outcome) -> None:
        """Keep what a person was just told (status, message, redirect), here and in the shared store.

        The relay's own words are kept as their English source and translated for each bot, so a bot hears the
        language it asked for, as a person would; a CRM's words are kept as they are (every person gets them).
        """
        message = outcome.message
        if message is not None and message in (QUEUED_MESSAGE, _(QUEUED_MESSAGE)):
            message = str(QUEUED_MESSAGE)
        answer = Outcome(outcome.status, message=message, redirect=outcome.redirect)
        if answer == form.last_answer:
            return
        form.last_answer = answer
        try:
            self.outbox.store.kv_set(f"answer:{form.slug}", json.dumps(answer.public()), ANSWER_TTL)
        except Exception as exc:  # storage away: this process still remembers it
            log.warning("form %s: cannot share the last answer (%s)", form.slug, exc.__class__.__name__)

    def bot_answer(self, form: Form) -> Outcome:
        """The answer a person would get now: the last one a person got, on any worker or host sharing the store."""
        shared = None
        try:
            shared = self.outbox.store.kv_get(f"answer:{form.slug}")
        except Exception as exc:  # storage away: this process's own memory of it
            log.warning("form %s: cannot read the last answer (%s)", form.slug, exc.__class__.__name__)
        answer = form.last_answer or Outcome("delivered")
        if shared:
            body = json.loads(shared)
            answer = Outcome(body["status"], message=body.get("message"), redirect=body.get("redirect"))
        guard = self.guards.get(form.config.provider)
        if guard is not None and guard.breaker.state == OPEN and form.provider.queueable(form.config):
            answer = Outcome("queued", message=QUEUED_MESSAGE)  # the CRM is failing: a person is queued now
        if answer.message == QUEUED_MESSAGE:
            answer = dataclasses.replace(answer, message=_(QUEUED_MESSAGE))
        return dataclasses.replace(answer, detail={"caught": True})  # detail is never shown

    def _check_captcha(self, form: Form, body: Mapping[str, Any], remote_ip: str | None) -> Outcome | None:
        captcha = form.config.captcha
        if captcha is None:
            return None
        token = body.get(captcha.field)
        verdict = abuse.verify_captcha(captcha, token if isinstance(token, str) else None, remote_ip,
                                       self.config.relay.timeout)
        if verdict == "ok" or (verdict == "unavailable" and captcha.on_error == "accept"):
            if verdict != "ok":
                log.warning("form %s: CAPTCHA service unavailable; accepting as configured", form.slug)
            return None
        abuse.count(form.slug, f"captcha {verdict}")
        if verdict == "unavailable":
            log.warning("form %s: CAPTCHA service unavailable; refusing as configured", form.slug)
            return Outcome("unavailable", message=_("Verification is unavailable just now. Please try again shortly."),
                           retry_after=30)
        return Outcome("invalid", message=_(CAPTCHA_MESSAGE), errors={captcha.field: [_(CAPTCHA_MESSAGE)]})
