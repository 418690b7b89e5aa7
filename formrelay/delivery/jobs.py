"""Jobs: one delivery to make, its states, how a submission is kept in it, and when it is tried again."""
from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from typing import Any

from formrelay.delivery.settings import QueueSettings
from formrelay.forms.submission import Submission

PENDING, INFLIGHT, DONE, DEAD = "pending", "inflight", "done", "dead"
STATES = (PENDING, INFLIGHT, DONE, DEAD)


@dataclass
class Job:
    """One delivery to make: a validated submission, to the form's provider ("primary") or a follow-up target.

    Every job made from one submission carries its `submission_id` (the primary, a follow-up, and later each
    `also` form or webhook): the submission's personal data is erased when ALL of them are done, not before
    (see formrelay.delivery.retention).
    """

    id: str
    form: str
    target: str
    submission: dict[str, Any]
    created_at: float
    due_at: float
    attempts: int = 0
    state: str = PENDING
    last_error: str | None = None
    lease_until: float | None = None
    outcome: str | None = None
    # True once an attempt may have reached the provider without an answer (read timeout, cut-off lease).
    uncertain: bool = False
    # What a destination job needs beyond the submission (a webhook event's outcome); never personal data.
    detail: dict[str, Any] | None = None
    finished_at: float | None = None  # when it was delivered, or moved to the dead letters
    retried_at: float | None = None  # an operator's retry restarts the clock that max_age counts
    erased: bool = False  # the personal data is gone; only metadata is left (the submission's id stays)

    @property
    def waiting_since(self) -> float:
        """Since when the job has been waiting, for the queue's "oldest waiting" age: an operator's retry of a dead
        letter starts it afresh (the stores index waiting jobs by this, not by created_at)."""
        return max(self.created_at, self.retried_at or 0.0)

    @property
    def submission_id(self) -> str:
        """The submission this job delivers: shared by its primary job and every destination job made from it."""
        return str(self.submission.get("id") or self.id)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        # Bodies written by an older or newer version may lack or add keys: take what this version knows.
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in _JOB_FIELDS})

    def summary(self, show_data: bool = False) -> dict[str, Any]:
        """What `formrelay queue` prints: never secrets; personal data only when asked for."""
        out: dict[str, Any] = {k: v for k, v in asdict(self).items() if k != "submission"}
        out["created"] = _iso(self.created_at)
        out["due"] = _iso(self.due_at) if self.state == PENDING else None
        out["finished"] = _iso(self.finished_at)
        if self.state == DONE:
            out["last_error"] = None  # an error that was overcome is history, not the job's state
        if show_data and not self.erased:
            out["submission"] = self.submission
        elif not self.erased:
            out["fields"] = sorted(self.submission.get("values", {}))
        return out

    def without_personal_data(self) -> Job:
        """This job with the submission reduced to metadata: form, ids and times stay, values and context go."""
        kept = {k: self.submission[k] for k in ("form", "id", "received_at") if k in self.submission}
        return replace(self, submission=kept, erased=True)


_JOB_FIELDS = frozenset(f.name for f in dataclass_fields(Job))


def _iso(when: float | None) -> str | None:
    return None if when is None else dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def serialise_submission(submission: Submission) -> dict[str, Any]:
    return {
        "form": submission.form,
        "values": {k: _jsonable(v) for k, v in submission.values.items()},
        "context": dict(submission.context),
        "idempotency_key": submission.idempotency_key,
        "locale": submission.locale,
        "id": submission.id,
        "received_at": submission.received_at,
        "page_options": dict(submission.page_options),
    }


def restore_submission(data: Mapping[str, Any]) -> Submission:
    return Submission(
        form=data["form"], values=data["values"], context=data.get("context", {}),
        idempotency_key=data.get("idempotency_key"), locale=data.get("locale"), id=data["id"],
        received_at=data["received_at"], page_options=data.get("page_options") or {},
    )


def new_job(form: str, target: str, submission: Any, due_at: float | None = None,
            detail: dict[str, Any] | None = None) -> Job:
    """A job for one target; its id is the submission's id, plus the target for any but the primary (stable)."""
    now = time.time()
    job_id = submission.id if target == "primary" else f"{submission.id}-{target}"
    return Job(id=job_id or uuid.uuid4().hex, form=form, target=target, submission=serialise_submission(submission),
               created_at=now, due_at=due_at if due_at is not None else now, detail=detail)


def backoff(settings: QueueSettings, attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    ceiling = min(settings.backoff_cap, settings.backoff_base * (2 ** max(0, attempts - 1)))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)
