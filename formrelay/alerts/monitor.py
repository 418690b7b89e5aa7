"""The alert monitor: a thread per server process that looks at the relay every few seconds, and a sender thread.

One message per event kind and provider per `alert_every`, for the whole deployment: before sending, a process
takes a lease in the queue store (`alerts:sent:<kind>:<provider>`, kv_add with a TTL of alert_every), which
every worker and host sharing the queue shares; whoever gets it sends, the others stay quiet. What was last sent
(`alerts:active:...`: since when, the count) lets a later message say how many are new, and tells whoever sees
the condition clear first to send one "resolved" message. Each process that sees a condition refreshes
`alerts:seen:...` while it holds (breakers and credentials are per process), so it is resolved only when no
process has seen it for three looks. While the queue storage itself does not answer there is nothing shared to
take a lease in: each process then says so at most once per alert_every on its own.

Nothing here runs on a request's thread: a submission never waits for, or fails because of, an alert.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from formrelay.alerts import conditions
from formrelay.alerts.conditions import BreakerView, Condition, Snapshot, Waiting
from formrelay.alerts.senders import Message, SendFailed, Sender, senders
from formrelay.alerts.settings import DEAD_LETTERS, STORAGE, AlertsSettings
from formrelay.core import logs
from formrelay.delivery.exports import EXPORTED  # set aside by `queue export --mark-exported`: an operator's doing
from formrelay.delivery.jobs import DEAD, PENDING, Job
from formrelay.delivery.stores import storage_down

log = logging.getLogger("formrelay.alerts")

DEAD_SCAN_LIMIT = 10_000  # dead letters read per look (their metadata); beyond it the counts say "at least"
OLDEST_SAMPLE = 200  # the oldest waiting jobs looked at to name forms and providers
ACTIVE_TTL = 30 * 86400.0
SEND_TRIES = (0.0, 5.0, 30.0)  # a failed send is tried again after these pauses
OUTBOX_MAX = 100
SETTLE_LOOKS = 3

_lost_lock = threading.Lock()
_lost = 0


def storage_lost(count: int) -> None:
    """The queue storage lost `count` jobs (Redis restarted without its data, a file replaced): alert on it.

    For the stores' own checks (formrelay.delivery.storage_check) to call, or a callback they are handed.
    """
    global _lost
    with _lost_lock:
        _lost += max(0, int(count))


def _take_lost() -> int:
    global _lost
    with _lost_lock:
        count, _lost = _lost, 0
    return count


def _provider_of(relay: Any, job: Job) -> str:
    if job.target == "primary":
        form = relay.forms.get(job.form)
        return str(form.config.provider) if form is not None else "?"
    if job.target == "followup":
        return "engageone"
    return job.target.split("/", 1)[0]  # a destination: also:<form>, webhook:<name>


def look(relay: Any, previous_dead: tuple[int, list[Waiting]] | None) -> tuple[Snapshot, tuple[int, list[Waiting]]]:
    """One look at the relay (counts, the dead letters' metadata, the oldest waiting jobs, breakers, auth)."""
    now = time.time()
    snap = Snapshot(now=now, storage_lost=_take_lost())
    dead_cache = previous_dead or (-1, [])
    try:
        snap.stats = relay.queue_stats(max_age=1.0)
        # A store can answer reads and refuse writes (Redis out of memory under noeviction, a full disk): write a
        # small key each look, as a submission would.
        relay.store.kv_set(f"alerts:probe:{socket.gethostname()}:{os.getpid()}", repr(now), 60.0)
        total = int(snap.stats.get("dead") or 0)
        if total != dead_cache[0]:  # read the dead letters again only when their number changed
            dead = []
            for n, job in enumerate(relay.store.scan(DEAD)):
                if n >= DEAD_SCAN_LIMIT:
                    break
                if EXPORTED not in (job.last_error or ""):
                    dead.append(Waiting(job.form, _provider_of(relay, job), job.last_error or "",
                                        job.finished_at or job.created_at))
            dead_cache = (total, dead)
        snap.dead = list(dead_cache[1])
        snap.oldest_waiting = [Waiting(j.form, _provider_of(relay, j), j.last_error or "", j.waiting_since)
                               for j in relay.store.jobs(PENDING, limit=OLDEST_SAMPLE)]
    except Exception as exc:
        if not storage_down(exc):
            raise
        snap.storage_error = exc.__class__.__name__
    for name, guard in relay.guards.items():
        snap.breakers.append(BreakerView(name, guard.breaker.down_since, guard.breaker.last_problem))
    for name, provider in relay.providers.items():
        state = provider.status()
        if state.get("state") == "failing":
            snap.auth_failing[name] = str(state.get("problem") or "authentication failing")
    return snap, dead_cache


class Outbox:
    """The sender thread: messages wait here, each sent to every channel, a failed send retried and logged once."""

    def __init__(self, channels: list[Sender], pauses: tuple[float, ...] = SEND_TRIES) -> None:
        self.channels = channels
        self.pauses = pauses
        self._queue: queue.Queue[Message | None] = queue.Queue(OUTBOX_MAX)
        self._thread = threading.Thread(target=self._run, name="formrelay-alerts-send", daemon=True)
        self._thread.start()

    def put(self, message: Message) -> None:
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            log.error("alerts: %d messages wait to be sent; %s for %s not queued", OUTBOX_MAX, message.kind,
                      message.provider or "the relay")

    def stop(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def _run(self) -> None:
        while True:
            message = self._queue.get()
            if message is None:
                return
            for channel in self.channels:
                self._send(channel, message)

    def _send(self, channel: Sender, message: Message) -> None:
        first: str | None = None
        for tries, pause in enumerate(self.pauses, start=1):
            time.sleep(pause)
            try:
                channel.send(message)
            except SendFailed as exc:
                first = first or str(exc)
                continue
            except Exception as exc:  # a bug in a sender must not end the thread
                first = first or exc.__class__.__name__
                continue
            if first:
                log.warning("alerts: %s message (%s) sent by %s after %d tries; the first failed: %s",
                            message.state, message.kind, channel.name, tries, logs.mask(first))
            return
        # One line per message and channel, however many tries: the reason without any URL or secret.
        log.error("alerts: could not send the %s message (%s %s) by %s after %d tries: %s", message.state,
                  message.kind, message.provider or "relay", channel.name, len(self.pauses), logs.mask(first or "?"))


class Monitor:
    """Looks at the relay every `check_every` seconds and hands what must be said to the outbox."""

    def __init__(self, relay: Any, settings: AlertsSettings, outbox: Outbox | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.relay = relay
        self.settings = settings
        self.outbox = outbox or Outbox(senders(settings))
        self.host = socket.gethostname()
        self.clock = clock
        self._dead: tuple[int, list[Waiting]] | None = None
        self._local_sent: dict[tuple[str, str], float] = {}  # while the store is down
        self._growing: dict[str, tuple[int, int]] = {}  # dead letters per provider: last count, looks growing
        self._seen: set[str] = set()  # providers and destinations this process has seen a condition for
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Monitor:
        self._thread = threading.Thread(target=self._run, name="formrelay-alerts", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.outbox.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.check_every):
            try:
                self.check()
            except Exception as exc:
                if storage_down(exc):
                    continue
                log.exception("alerts: a look at the relay failed; carrying on")

    def check(self) -> list[Message]:
        """One look, and the messages it decided to send (also handed to the outbox)."""
        queue_settings = self.relay.queue_settings
        snap, self._dead = look(self.relay, self._dead)
        found = [c for c in conditions.evaluate(snap, queue_settings.alert_after, self.settings.alert_after_open,
                                                queue_settings.warn_at) if c.kind in self.settings.events]
        sent: list[Message] = []
        if snap.storage_error:
            for cond in found:
                if cond.kind == STORAGE:
                    sent += self._local(cond, snap.now)
            return self._hand(sent)
        store = self.relay.store
        holding = {(c.kind, c.provider) for c in found}
        self._seen |= {c.provider for c in found}
        for cond in found:
            store.kv_set(self._key("seen", cond.kind, cond.provider), self.host, 3 * self.settings.check_every + 1)
            if not self._settled(cond):
                continue
            message = self._firing(store, cond, snap.now)
            if message is not None:
                sent.append(message)
        for kind, provider in list(self._local_sent):  # the storage answers again
            if kind == STORAGE and (kind, provider) not in holding:
                del self._local_sent[(kind, provider)]
                sent.append(Message(kind, provider, "resolved", conditions.subject(None, kind, provider, True),
                                    conditions.resolved_text(kind, provider, snap.now, self.host)))
        sent += self._resolved(store, holding, snap.now)
        return self._hand(sent)

    def _settled(self, cond: Condition) -> bool:
        """Dead letters come in bursts (an outage buries many within seconds): say it once the count held still for
        one look, or after SETTLE_LOOKS looks, so the message counts the burst rather than its first letter."""
        if cond.kind != DEAD_LETTERS:
            return True
        last, looks = self._growing.get(cond.provider, (-1, 0))
        if cond.count == last or looks >= SETTLE_LOOKS:
            self._growing[cond.provider] = (cond.count, 0)
            return True
        self._growing[cond.provider] = (cond.count, looks + 1)
        return False

    def _hand(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            log.info("alerts: %s %s %s", message.state, message.kind, message.provider or "relay",
                     extra={"event": "alert", "alert": message.kind, "provider": message.provider,
                            "state": message.state})
            self.outbox.put(message)
        return messages

    @staticmethod
    def _key(what: str, kind: str, provider: str) -> str:
        return f"alerts:{what}:{kind}:{provider or '-'}"

    def _firing(self, store: Any, cond: Condition, now: float) -> Message | None:
        active_key = self._key("active", cond.kind, cond.provider)
        raw = store.kv_get(active_key)
        active = json.loads(raw) if raw else None
        if cond.kind == DEAD_LETTERS and active is not None and cond.count <= int(active.get("count", 0)):
            return None  # nothing new since the last message: no digest
        mine = json.dumps({"host": self.host, "at": now, "nonce": threading.get_ident()})
        if store.kv_add(self._key("sent", cond.kind, cond.provider), mine, self.settings.alert_every) != mine:
            return None  # another process (or this one) said it within alert_every
        since = active["since"] if active else now
        store.kv_set(active_key, json.dumps({"since": since, "count": cond.count, "last": now}), ACTIVE_TTL)
        new = cond.count - int(active.get("count", 0)) if active and cond.kind == DEAD_LETTERS else None
        body = conditions.text(cond, self.host, new, active.get("last") if active else None)
        return Message(cond.kind, cond.provider, "firing", conditions.subject(cond, cond.kind, cond.provider, False),
                       body, {"count": cond.count, "forms": cond.forms, "reasons": cond.reasons,
                              "next": cond.next_step})

    def _resolved(self, store: Any, holding: set[tuple[str, str]], now: float) -> list[Message]:
        out = []
        for kind in self.settings.events:
            for provider in sorted({"", *self.relay.providers, *self._seen}):
                if (kind, provider) in holding:
                    continue
                active_key = self._key("active", kind, provider)
                raw = store.kv_get(active_key)
                if not raw or store.kv_get(self._key("seen", kind, provider)):
                    continue  # never fired, or another process still sees it
                since = float(json.loads(raw).get("since") or now)
                claim = json.dumps({"host": self.host, "nonce": threading.get_ident()})
                if store.kv_add(self._key("resolved", kind, provider) + f":{since}", claim, ACTIVE_TTL) != claim:
                    continue
                store.kv_delete(active_key, raw)
                sent_value = store.kv_get(self._key("sent", kind, provider))
                if sent_value:
                    store.kv_delete(self._key("sent", kind, provider), sent_value)  # a relapse is news at once
                out.append(Message(kind, provider, "resolved", conditions.subject(None, kind, provider, True),
                                   conditions.resolved_text(kind, provider, since, self.host)))
        return out

    def _local(self, cond: Condition, now: float) -> list[Message]:
        last = self._local_sent.get((cond.kind, cond.provider))
        if last is not None and now - last < self.settings.alert_every:
            return []
        self._local_sent[(cond.kind, cond.provider)] = now
        return [Message(cond.kind, cond.provider, "firing", conditions.subject(cond, cond.kind, cond.provider, False),
                        conditions.text(cond, self.host), {"count": cond.count, "next": cond.next_step})]
