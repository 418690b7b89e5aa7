"""Job targets: what a queue job delivers to, and the registry each kind of target adds itself to.

A job's `target` names where it goes: the submission's own provider, or somewhere else once that delivery is
done (another form's CRM, a webhook, an email). Each kind lives in a module of its own and registers a Kind
here; the handler, the dispatcher and the relay only ever ask the registry, so no kind and no provider is
named outside the kind's own module. A kind answers:

- `owns(target)`: whether a job's target is of this kind;
- `attempt(form, job, submission)`: one try (an Outcome; TryLater for "not now", DeadLetter for "never");
- `rule(form, target)`: for a try that may have arrived, "retry" or "hold" (for an operator);
- `guard(form, target)`: the provider's bulkhead and breaker the try goes through, if any;
- `destination(form, target)`: how logs and metrics name where it went;
- `delivered` / `queued` / `dead`: the submission's own delivery has settled; make this kind's jobs.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from formrelay.core.config import Config
from formrelay.core.outcome import Outcome
from formrelay.delivery.attempts import Guard
from formrelay.delivery.capacity import Outbox
from formrelay.delivery.form import Form
from formrelay.delivery.jobs import Job
from formrelay.forms.submission import Submission

if TYPE_CHECKING:
    from formrelay.providers.base import Provider


class DeadLetter(Exception):
    """This job cannot succeed as it stands (the mapped submission is invalid there, the destination is gone)."""


@dataclass(frozen=True)
class Site:
    """What a kind may use: the relay's config, forms, providers, their guards, and the outbox."""

    config: Config
    forms: Mapping[str, Form]
    providers: Mapping[str, Provider]
    guards: Mapping[str, Guard]
    outbox: Outbox


class Kind:
    """One kind of job target. A subclass registers itself with @register and is made once per relay."""

    # Where the kind's events come in the order of the registry (the jobs of a delivered submission are made in it).
    order: ClassVar[int] = 100
    # The submission's own delivery: when it settles, the other kinds hear of it (delivered, queued, dead).
    own: ClassVar[bool] = False

    def __init__(self, site: Site) -> None:
        self.site = site

    def owns(self, target: str) -> bool:
        raise NotImplementedError

    def attempt(self, form: Form, job: Job, submission: Submission) -> Outcome:
        raise NotImplementedError

    def rule(self, form: Form, target: str) -> str:
        return "retry"

    def guard(self, form: Form, target: str) -> Guard | None:
        return None  # judged by its own jobs' backoff only

    def destination(self, form: Form, target: str) -> str:
        return target

    def delivered(self, form: Form, submission: Submission) -> None:
        """The form's own provider has the submission."""

    def queued(self, form: Form, submission: Submission, reason: str) -> None:
        """The relay answered 202 for the submission."""

    def dead(self, form: Form, submission: Mapping[str, Any], reason: str) -> None:
        """The submission's own delivery went to the dead letters (`submission` as the job stores it)."""

    def close(self) -> None:
        """Let go of what the kind holds (connections)."""


class Unknown(Kind):
    """A target no registered kind owns (a job written by another version): tried like any bug, then dead."""

    def owns(self, target: str) -> bool:
        return True

    def attempt(self, form: Form, job: Job, submission: Submission) -> Outcome:
        raise ValueError(f"unknown delivery target {job.target!r}")


_KINDS: list[type[Kind]] = []


def register(kind: type[Kind]) -> type[Kind]:
    """Add a kind to the registry (a class decorator); registering the same class twice keeps one."""
    if kind not in _KINDS:
        _KINDS.append(kind)
        _KINDS.sort(key=lambda k: k.order)
    return kind


def registered() -> list[type[Kind]]:
    return list(_KINDS)


class Targets:
    """The registered kinds, made for one relay: which kind a target is, and the events each kind hears."""

    def __init__(self, site: Site) -> None:
        self.kinds = [kind(site) for kind in registered()]
        self._unknown = Unknown(site)

    def kind(self, target: str) -> Kind:
        return next((kind for kind in self.kinds if kind.owns(target)), self._unknown)

    def delivered(self, form: Form, submission: Submission) -> None:
        self._tell(lambda kind: kind.delivered(form, submission))

    def queued(self, form: Form, submission: Submission, reason: str) -> None:
        self._tell(lambda kind: kind.queued(form, submission, reason))

    def dead(self, form: Form, submission: Mapping[str, Any], reason: str) -> None:
        self._tell(lambda kind: kind.dead(form, submission, reason))

    def _tell(self, event: Callable[[Kind], None]) -> None:
        for kind in self.kinds:
            event(kind)

    def close(self) -> None:
        for kind in self.kinds:
            kind.close()
