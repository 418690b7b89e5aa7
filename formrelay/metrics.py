"""Prometheus metrics: what the relay did (counters, histograms) and what it holds now (queue, auth state).

Counters and histograms live in prometheus-client's registry. Under gunicorn with several workers each worker
counts for itself; with PROMETHEUS_MULTIPROC_DIR set (the shipped gunicorn config sets it), every worker writes
its values to files there and a scrape of any worker sums them all. What the relay *holds* (queue depth, the
oldest waiting submission, dead letters) is read from the shared queue storage at scrape time, so it is the
same from whichever worker answers. Labels are form slugs, provider names, status words and reasons: never
personal data, and never anything a client chose (unknown slugs are not counted by name).

A leaf of the transport floor: it imports only core. The gauges read the relay through `RelayState`, a shape
this module declares and the relay (a floor above) has; the operations endpoint hands the relay in.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

if TYPE_CHECKING:
    from formrelay.core.config import MetricsSettings

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

SUBMISSIONS = Counter(
    "formrelay_submissions", "Submissions answered, by form, provider and outcome (the contract's status word).",
    ["form", "provider", "outcome"],
)
UPSTREAM_SECONDS = Histogram(
    "formrelay_upstream_request_seconds", "Time for one call to a provider, by provider and result.",
    ["provider", "result"], buckets=LATENCY_BUCKETS,
)
TOKEN_REFRESHES = Counter(
    "formrelay_token_refreshes", "Authentications made to obtain a provider token (ENS, EngageOne).",
    ["provider", "result"],
)
REJECTIONS = Counter(
    "formrelay_rejections", "Submissions refused or discarded before delivery: rate limits, spam traps, CAPTCHA, origin.",
    ["form", "reason"],
)
QUEUE_ATTEMPTS = Counter(
    "formrelay_queue_attempts", "Worker delivery attempts of queued submissions, by form, target and result.",
    ["form", "target", "result"],
)

DEFERRALS = Counter(
    "formrelay_deferrals", "Submissions answered 'queued' without a delivery, by provider and reason (deadline passed, "
    "bulkhead full, breaker open, surge, provider said not now).", ["provider", "reason"],
)
REPEATS = Counter(
    "formrelay_idempotent_repeats", "Repeats of an Idempotency-Key, by form and what they got (first answer, "
    "conflict: another body, in progress).", ["form", "result"],
)
BREAKER_CHANGES = Counter(
    "formrelay_breaker_changes", "Circuit breaker state changes, by provider and the new state.", ["provider", "state"],
)
QUEUE_REFUSALS = Counter(
    "formrelay_queue_full_refusals", "Submissions answered 503 because the queue reached its cap (jobs or bytes).",
    ["form"],
)
DESTINATION_ATTEMPTS = Counter(
    "formrelay_destination_attempts",
    "Attempts at a form's other destinations (`also:<form>`, `webhook:<name>`), by form, destination and result.",
    ["form", "destination", "result"],
)


def upstream_result(status: int | None) -> str:
    """'2xx', '4xx', '5xx' ... or 'error' when no answer came."""
    return f"{status // 100}xx" if status else "error"


class _HasStatus(Protocol):
    def status(self) -> Mapping[str, Any]: ...


class _Guard(Protocol):
    """A provider's bulkhead (in_use) and breaker (state), as delivery/attempts.py keeps them."""

    @property
    def breaker(self) -> Any: ...

    @property
    def bulkhead(self) -> Any: ...


class RelayState(Protocol):
    """What the gauges read at scrape time. Metrics is a leaf that knows no relay: the relay (a floor above)
    is handed in by the operations endpoint and satisfies this by its shape."""

    @property
    def providers(self) -> Mapping[str, _HasStatus]: ...

    @property
    def guards(self) -> Mapping[str, _Guard]: ...

    def queue_stats(self) -> Mapping[str, Any]: ...


class RelayCollector(Collector):
    """Gauges read at scrape time from the relay's shared state."""

    def __init__(self, relay: RelayState) -> None:
        self.relay = relay

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("formrelay_queue_storage_up", "1 when the queue storage answered this scrape.")
        try:
            stats = self.relay.queue_stats()
        except Exception as exc:  # a scrape must not fail because the queue storage is down
            log.warning("metrics: queue storage unavailable (%s)", exc.__class__.__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, key, text in (
            ("formrelay_queue_depth", "depth", "Submissions waiting for delivery (due and in flight)."),
            ("formrelay_queue_inflight", "inflight", "Submissions a worker is delivering now."),
            ("formrelay_queue_dead_letters", "dead", "Submissions set aside for an operator."),
        ):
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], float(stats[key]))
            yield gauge
        oldest = GaugeMetricFamily("formrelay_queue_oldest_age_seconds",
                                   "Age of the oldest submission still waiting (0 when none).")
        oldest.add_metric([], float(stats["oldest_age"] or 0.0))
        yield oldest
        for name, key, text in (
            ("formrelay_queue_bytes", "bytes", "Bytes held by waiting submissions."),
            ("formrelay_queue_capacity_used", "capacity_used",
             "The larger of jobs/max_jobs and bytes/max_bytes: 1 means new deferrals are refused (503)."),
        ):
            gauge = GaugeMetricFamily(name, text)
            gauge.add_metric([], float(stats.get(key) or 0.0))
            yield gauge
        guards = self.relay.guards
        breaker = GaugeMetricFamily("formrelay_breaker_state",
                                    "1 for the provider's circuit breaker state in this process.",
                                    labels=["provider", "state"])
        busy = GaugeMetricFamily("formrelay_bulkhead_in_use", "Upstream calls in flight per provider (this process).",
                                 labels=["provider"])
        for name, guard in guards.items():
            for state in ("closed", "open", "half-open"):
                breaker.add_metric([name, state], 1.0 if guard.breaker.state == state else 0.0)
            busy.add_metric([name], float(guard.bulkhead.in_use))
        yield breaker
        yield busy
        auth = GaugeMetricFamily("formrelay_provider_auth_ok",
                                 "1 when the provider's last authentication worked, 0 when failing (this process).",
                                 labels=["provider"])
        for name, provider in self.relay.providers.items():
            state = provider.status().get("state")
            if state in ("ok", "failing"):
                auth.add_metric([name], 1.0 if state == "ok" else 0.0)
        yield auth


def exposition(relay: RelayState, *more: Collector) -> tuple[bytes, str]:
    """The text a scrape gets: this process's (or all workers') metrics plus the relay's gauges (and `more`)."""
    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(RelayCollector(relay))
    for collector in more:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Forward(Collector):
    """The default registry's metrics, inside a registry of our own (so the relay gauges are per app)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


def allowed(settings: MetricsSettings, remote_addr: str | None, authorization: str | None) -> bool:
    """A scrape is allowed from an address in `allow`, or with `Authorization: Bearer <token>`."""
    if settings.token and authorization:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), settings.token.encode()):
            return True
    if not remote_addr:
        return False
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.allow)


def share_between_workers() -> str | None:
    """Give the workers a directory to share their values in (emptied now) and count into it; the one made, if any.

    The operator's $PROMETHEUS_MULTIPROC_DIR is used when set (stale values of a previous run must not leak in),
    else a new temporary directory. Called by every server front (formrelay serve, the gunicorn config) before
    the workers start.
    """
    import tempfile
    from pathlib import Path

    made = None
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        for stale in Path(path).glob("*.db"):
            stale.unlink()
    else:
        made = tempfile.mkdtemp(prefix="formrelay-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    use_multiprocess()
    return made


def use_multiprocess() -> None:
    """Values made from now on go to $PROMETHEUS_MULTIPROC_DIR, even if prometheus-client was imported first.

    prometheus-client picks its value class when it is imported; a server config that sets the directory after
    something imported it would otherwise leave every worker counting alone (and /metrics without counters).
    Our metrics all have labels, so their values are made later, at the first `.labels()` in each worker.
    """
    from prometheus_client import values

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus-client asks the kernel for the pid (a system call) at every inc() and observe(), to notice a
        # fork; the pid is remembered here and renewed in each forked child, which tells it the same thing.
        values.ValueClass = values.MultiProcessValue(process_identifier=_pid)


_PID = os.getpid()


def _pid() -> int:
    return _PID


def _forked() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_forked)


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit hook: drop a dead worker's live gauges from the multiprocess files."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
