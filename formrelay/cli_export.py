"""`formrelay queue export`: waiting or dead submissions as CSV or JSON lines, for a CRM's bulk import.

The rows carry supporters' personal data, so the command writes them to a file (`--output`, created readable by
its owner only) and prints them to a terminal only with `--yes`. Each export is one audit line (count, filters,
file name) in the queue store and the server's log. Registered on the `queue` group by formrelay.cli.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import time
import uuid
from typing import IO, Any

import click

from formrelay.cli_queue import _forms, config_option, opened, queue

MAX_ERROR_TEXT = 200


@queue.command("export")
@config_option
@click.option("--state", type=click.Choice(["dead", "pending"]), default="dead", show_default=True,
              help="dead letters, or submissions still waiting for the CRM")
@click.option("--form", "forms", multiple=True, help="only this form (repeatable)")
@click.option("--provider", default=None, help="only forms of this provider (ngp, ens, actionnetwork, engageone)")
@click.option("--since", default=None,
              help="only submissions received at or after this time (ISO 8601, UTC unless it says otherwise) or "
                   "this long ago (2h, 1d)")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="write to this file (created for its owner only); without it, standard output")
@click.option("--bom", is_flag=True, help="start the CSV with a UTF-8 byte order mark (for Excel)")
@click.option("--mark-exported", is_flag=True,
              help="set the exported waiting jobs aside (to the dead letters) so the relay does not deliver them "
                   "too once the CRM is back")
@click.option("--yes", "-y", is_flag=True, help="print personal data to a terminal")
def queue_export(config_path: str | None, state: str, forms: tuple[str, ...], provider: str | None,
                 since: str | None, fmt: str, output: str | None, bom: bool, mark_exported: bool, yes: bool) -> None:
    """Submissions as rows for a CRM's bulk import: the form's own field names as columns, plus submitted_at,
    form, provider, reason and job_id. Afterwards: `formrelay queue drop --exported-before TIME --yes`."""
    from formrelay.delivery import admin, exports

    if output is None and sys.stdout.isatty() and not yes:
        raise click.ClickException("the export holds supporters' personal data: write it to a file with --output "
                                   "FILE, or confirm printing it here with --yes")
    now = time.time()
    try:
        since_at = admin.parse_time(since, now) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    with opened(config_path) as relay:
        wanted = _forms(relay, forms, provider)
        providers = {slug: form.config.provider for slug, form in relay.forms.items()}
        found = list(exports.rows(relay.store, exports.filters_for(state, wanted, since_at, now), providers, now))
        found.sort(key=lambda row: (row.meta["submitted_at"], row.job_id))
        text = _csv(found, bom) if fmt == "csv" else _jsonl(found)
        _write(output, text)
        ids = [row.job_id for row in found]
        exports.mark(relay.store, ids, now)
        aside = exports.set_aside(relay.store, ids, now) if mark_exported else []
        # One line for the whole export: how many, which filters, where to; never a value from the rows.
        admin.audit(relay.store, "export", [f"export-{uuid.uuid4().hex[:12]}"], count=len(found), state=state,
                    form=",".join(forms), provider=provider, since=since, format=fmt,
                    output=os.path.abspath(output) if output else "stdout", set_aside=len(aside) or None)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 1))
    click.echo(f"{len(found)} submission(s) exported" + (f" to {output}" if output else "")
               + (f"; {len(aside)} set aside so the relay does not deliver them" if aside else "")
               + f". After the import: formrelay queue drop --exported-before {stamp} --yes", err=True)


def _csv(found: list[Any], bom: bool) -> str:
    from formrelay.delivery import exports

    buffer = io.StringIO()
    if bom:
        buffer.write("\ufeff")
    header = exports.columns(found)
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180, which spreadsheets and CRMs' importers read
    writer.writerow(header)
    for row in found:
        flat = row.flat()
        writer.writerow([exports.cell(flat.get(name)) for name in header])
    return buffer.getvalue()


def _jsonl(found: list[Any]) -> str:
    # JSON keeps values as they are (a formula in a JSON string is not run by anything that reads JSON).
    return "".join(json.dumps(row.flat(), ensure_ascii=False) + "\n" for row in found)


# On a terminal (--yes), a value's control characters (an escape sequence can rewrite the screen) are shown, not run.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _write(output: str | None, text: str) -> None:
    if output is None:
        if sys.stdout.isatty():
            text = CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)
        click.echo(text, nl=False)
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}"[:MAX_ERROR_TEXT]) from None
    out: IO[str]
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        out.write(text)
