"""`formrelay queue ...`: see and act on what is waiting or dead in the queue, with or without a terminal.

Every command works from scripts and cron (no prompt without a terminal: `drop` then needs `--yes`), can print
JSON (`--json`), and every change is audited: one line per job, naming the action, the job id and the operator,
never the supporter's data.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from formrelay.core import logs
from formrelay.core.config import ConfigError, load_config
from formrelay.core.suggest import did_you_mean

STATES = ["pending", "inflight", "done", "dead"]
config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="TOML file (default: $FORMRELAY_CONFIG or ./formrelay.toml)")
json_option = click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")


@contextmanager
def opened(config_path: str | None) -> Iterator[Any]:
    """The relay for this config, with its [logging] settings, so the CLI's audit lines look like the server's."""
    from formrelay.delivery.relay import Relay

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    logs.configure(config.logging.format, config.logging.level)
    logs.show_personal_data(config.logging.personal_data)
    logs.add_secrets(config.secrets)
    # The relay's start-up warnings are about serving (e.g. no secret_key for the time trap): not the queue's.
    abuse_log = logging.getLogger("formrelay.abuse")
    level = abuse_log.level
    abuse_log.setLevel(logging.ERROR)
    try:
        relay = Relay(config)
    finally:
        abuse_log.setLevel(level)
    try:
        yield relay
    finally:
        relay.close()


def _forms(relay: Any, forms: tuple[str, ...], provider: str | None) -> set[str] | None:
    """The forms meant by --form and --provider (None: every form); a name not in the config gets a hint."""
    configured = relay.forms
    for name in forms:
        if name not in configured:
            click.echo(f"note: no form {name!r} in the config{did_you_mean(name, configured)}", err=True)
    wanted = set(forms) if forms else None
    if provider:
        if provider not in {f.config.provider for f in configured.values()}:
            known = {f.config.provider for f in configured.values()}
            raise click.ClickException(f"no form uses the provider {provider!r}{did_you_mean(provider, known)}")
        of_provider = {slug for slug, f in configured.items() if f.config.provider == provider}
        wanted = of_provider if wanted is None else wanted & of_provider
    return wanted


def _duration(value: str | None) -> float | None:
    from formrelay.delivery.admin import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _summary(relay: Any, job: Any, show_data: bool = False) -> dict[str, Any]:
    from formrelay.delivery.destinations import destination

    out: dict[str, Any] = job.summary(show_data)
    form = relay.forms.get(job.form)
    out["provider"] = form.config.provider if form is not None else None
    out["submission_id"] = job.submission_id
    # Where this job delivers: the form's provider for the primary, else the destination (also form, webhook).
    out["destination"] = out["provider"] if job.target == "primary" else destination(job.target)
    return out


class _QueueGroup(click.Group):
    """`formrelay queue ...`: a queue storage that does not answer is one line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from formrelay.delivery.stores import storage_down

        try:
            return super().invoke(ctx)
        except Exception as exc:
            if isinstance(exc, click.ClickException) or not storage_down(exc):
                raise
            # Which kind of failure, never the URL (it may carry a password).
            raise click.ClickException(f"the queue storage does not answer ({exc.__class__.__name__}): "
                                       "check that Redis (redis_url) or the SQLite file ([queue] path) is "
                                       "reachable") from None


@click.group(cls=_QueueGroup)
def queue() -> None:
    """See and act on what is waiting or dead in the queue."""


@queue.command("list")
@config_option
@click.option("--state", type=click.Choice(STATES), default=None)
@click.option("--form", "forms", multiple=True, help="only this form (repeatable)")
@click.option("--provider", default=None, help="only forms of this provider (ngp, ens, actionnetwork, engageone)")
@click.option("--older-than", default=None, help="received longer ago than this (30m, 2h, 3d)")
@click.option("--newer-than", default=None, help="received more recently than this")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
@json_option
def queue_list(config_path: str | None, state: str | None, forms: tuple[str, ...], provider: str | None,
               older_than: str | None, newer_than: str | None, limit: int, as_json: bool) -> None:
    """One line per job: waiting jobs first, then dead letters, then delivered ones; oldest first in each.

    Filtering, ordering and the limit happen inside the store: the memory used is bounded by --limit, not by the
    depth of the queue. No personal data.
    """
    from formrelay.delivery.jobs import DEAD, DONE, INFLIGHT, PENDING

    rank = {PENDING: 0, INFLIGHT: 0, DEAD: 1, DONE: 2}
    with opened(config_path) as relay:
        now = time.time()
        older, newer = _duration(older_than), _duration(newer_than)
        states = [state] if state else [PENDING, INFLIGHT, DEAD, DONE]
        found = relay.store.listing(states, _forms(relay, forms, provider),
                                    created_after=None if newer is None else now - newer,
                                    created_before=None if older is None else now - older, limit=limit + 1)
        found.sort(key=lambda j: (rank[j.state], j.created_at, j.id))
        more = len(found) > limit
        jobs = found[:limit]
        shown = [_summary(relay, j) for j in jobs]
        stats = relay.queue_stats()
    if as_json:
        click.echo(json.dumps({**stats, "matched": len(jobs), "more": more, "jobs": shown}, indent=2))
        return
    click.echo(f"depth {stats['depth']}, dead {stats['dead']}, oldest waiting {_age(stats['oldest_age'])}; "
               + (f"the first {limit} matching job(s) shown (more match: narrow it, or raise --limit)" if more
                  else f"{len(jobs)} job(s) match"))
    for s in shown:
        when = f"due={s['due']}" if s["due"] else f"finished={s['finished'] or '-'}"
        flags = "".join([" uncertain" if s["uncertain"] else "", " erased" if s["erased"] else ""])
        click.echo(f"{s['id']}  {s['state']:<8} {s['form']:<16} {s['target']:<8} attempts={s['attempts']:<3} "
                   f"{when}{flags}  {logs.printable(s['last_error'] or '')}".rstrip())  # a CRM's words: escaped
    _destinations(shown)


def _destinations(shown: list[dict[str, Any]]) -> None:
    """Where a submission has several jobs (follow-up, also forms, webhooks): one line each, every job's state."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for s in shown:
        groups.setdefault(s["submission_id"], []).append(s)
    if not any(len(group) > 1 or group[0]["target"] != "primary" for group in groups.values()):
        return
    click.echo("\ndestinations by submission:")
    for submission_id, group in groups.items():
        parts = []
        for s in group:
            event = f" ({s['target'].rpartition('/')[2]})" if s["target"].startswith("webhook:") else ""
            parts.append(f"{s['destination']}{event} {s['state']}")
        click.echo(f"{submission_id}  {group[0]['form']:<16} {', '.join(parts)}")


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.0f}s"


@queue.command("show")
@click.argument("job_id")
@config_option
@click.option("--show-data", is_flag=True, help="include the supporter's personal data (while the queue has it)")
def queue_show(job_id: str, config_path: str | None, show_data: bool) -> None:
    """One job as JSON; the submitted values only with --show-data (an access that is audited)."""
    from formrelay.delivery import admin

    with opened(config_path) as relay:
        job = relay.store.get(job_id)
        if job is None:
            raise click.ClickException(f"no job {job_id}")
        if show_data and not job.erased:
            admin.audit(relay.store, "show-data", [job.id])  # reading someone's data is worth a trace too
        click.echo(json.dumps(_summary(relay, job, show_data), indent=2))


@queue.command("retry")
@click.argument("job_ids", nargs=-1)
@config_option
@click.option("--all", "retry_all", is_flag=True, help="every dead letter (narrowed by --form and --since)")
@click.option("--form", "forms", multiple=True, help="with --all: only this form (repeatable)")
@click.option("--provider", default=None, help="with --all: only forms of this provider")
@click.option("--since", default=None,
              help="with --all: only jobs that went dead at or after this time (ISO 8601, UTC unless it says "
                   "otherwise) or this long ago (2h, 1d)")
@click.option("--include-held", is_flag=True,
              help="with --all: also jobs held because a retry could deliver them twice")
@json_option
def queue_retry(job_ids: tuple[str, ...], config_path: str | None, retry_all: bool, forms: tuple[str, ...],
                provider: str | None, since: str | None, include_held: bool, as_json: bool) -> None:
    """Deliver dead or waiting jobs again now: attempts reset to 0, backoff and max_age started afresh."""
    from formrelay.delivery import admin

    if bool(job_ids) == retry_all:
        raise click.UsageError("give job ids, or --all (with --form/--provider/--since to narrow it)")
    if not retry_all and (forms or provider or since or include_held):
        raise click.UsageError("--form, --provider, --since and --include-held go with --all")
    with opened(config_path) as relay:
        store = relay.store
        held: list[str] = []
        if retry_all:
            try:
                dead_since = admin.parse_time(since) if since else None
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--since") from None
            filters = admin.Filters(forms=_forms(relay, forms, provider), dead_since=dead_since)
            retried, held = admin.retry_all(store, filters, include_held)
            missing: list[str] = []
        else:
            now = time.time()
            retried = [j for j in job_ids if store.retry(j, now)]
            missing = [j for j in job_ids if j not in retried]
        admin.audit(store, "retry", retried, form=",".join(forms), provider=provider, since=since,
                    include_held=include_held or None)
    _report(as_json, "retry", retried, {"skipped_held": held, "not_retried": missing},
            f"{len(retried)} job(s) will be tried again now")
    if held and not as_json:
        click.echo(f"{len(held)} held job(s) left alone (a retry could deliver them twice): check each, then "
                   f"`formrelay queue retry ID`, or add --include-held", err=True)
    if missing:
        raise click.ClickException("not retried (no such job, being delivered, delivered, or erased): "
                                   + " ".join(missing))


@queue.command("drop")
@click.argument("job_ids", nargs=-1)
@config_option
@click.option("--exported-before", default=None,
              help="instead of ids: every waiting or dead job `queue export` wrote out at or before this time "
                   "(ISO 8601 or 2h), i.e. what was imported into the CRM by hand (docs/export.md)")
@click.option("--yes", "-y", is_flag=True, help="do not ask (needed without a terminal)")
@json_option
def queue_drop(job_ids: tuple[str, ...], config_path: str | None, exported_before: str | None, yes: bool,
               as_json: bool) -> None:
    """Delete waiting or dead jobs for good (after an operator decided they must not be delivered)."""
    from formrelay.delivery import admin

    if bool(job_ids) == bool(exported_before):
        raise click.UsageError("give job ids, or --exported-before TIME")
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException("drop deletes submissions for good; without a terminal, confirm with --yes")
        click.confirm(f"Drop {len(job_ids) or 'the exported'} submission(s) for good?", abort=True)
    with opened(config_path) as relay:
        if exported_before:
            job_ids = _exported_before(relay, exported_before)
        dropped = [j for j in job_ids if admin.drop(relay.store, j)]
        relay.store.scrub(wait=5.0)  # this process exits next: make the deletion final on disk now
        admin.audit(relay.store, "drop", dropped)
    missing = [j for j in job_ids if j not in dropped]
    _report(as_json, "drop", dropped, {"not_dropped": missing}, f"{len(dropped)} job(s) dropped")
    if missing:
        raise click.ClickException("not dropped (no such job, or being delivered, or delivered): " + " ".join(missing))


def _exported_before(relay: Any, when: str) -> tuple[str, ...]:
    from formrelay.delivery import admin, exports

    try:
        before = admin.parse_time(when)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--exported-before") from None
    return tuple(job.id for job in exports.exported_before(relay.store, before))


@queue.command("purge")
@config_option
@click.option("--older-than", "days", required=True, type=click.FloatRange(min=0),
              help="days since the job went to the dead letters")
@json_option
def queue_purge(config_path: str | None, days: float, as_json: bool) -> None:
    """Delete dead letters older than N days, with their personal data (for cron)."""
    from formrelay.delivery import admin, retention

    with opened(config_path) as relay:
        purged = retention.purge_dead(relay.store, days * 86400)
        admin.audit(relay.store, "purge", purged, older_than_days=days)
    _report(as_json, "purge", purged, {}, f"{len(purged)} dead letter(s) older than {days:g} day(s) purged")


@queue.command("forget")
@config_option
@click.option("--email", required=True, help="the person's email address, as submitted (case ignored)")
@json_option
def queue_forget(config_path: str | None, email: str, as_json: bool) -> None:
    """Erase one person's data from the queue: waiting and dead jobs deleted, delivered ones reduced to metadata."""
    from formrelay.delivery import admin, retention

    with opened(config_path) as relay:
        result = retention.forget(relay.store, email)
        # The address itself is personal data: the audit line names the jobs only.
        admin.audit(relay.store, "forget-drop", result.dropped)
        admin.audit(relay.store, "forget-erase", result.erased)
        note = relay.store.rewrite_persistence()
    _report(as_json, "forget", result.dropped + result.erased,
            {"dropped": result.dropped, "erased": result.erased, "busy": result.busy, "persistence": note},
            f"{len(result.dropped)} waiting or dead job(s) deleted, {len(result.erased)} delivered job(s) erased")
    if note and not as_json:
        click.echo(note, err=True)
    if result.busy:
        raise click.ClickException(f"{len(result.busy)} job(s) are being delivered right now: run this again in a "
                                   f"minute ({' '.join(result.busy)})")


@queue.command("audit")
@config_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@json_option
def queue_audit(config_path: str | None, limit: int, as_json: bool) -> None:
    """The latest operator actions recorded in the queue store (the server's log has them too)."""
    import datetime as dt

    with opened(config_path) as relay:
        entries = relay.store.audit_recent(limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        when = dt.datetime.fromtimestamp(e["at"], dt.UTC).isoformat(timespec="seconds")
        click.echo(logs.printable(f"{when}  {e['action']:<12} {e['job_id']}  by {e['operator']}"))


def _report(as_json: bool, action: str, ids: list[str], more: dict[str, Any], text: str) -> None:
    if as_json:
        click.echo(json.dumps({"action": action, "jobs": ids, **{k: v for k, v in more.items() if v is not None}},
                              indent=2))
    else:
        click.echo(text)
        for job_id in ids:
            click.echo(f"  {job_id}")
