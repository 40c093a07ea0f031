"""The dispatcher: decides what runs when, and hands it to Celery.

One leader at a time (a ``SET NX PX`` lock, renewed every tick; a second ``broadcast scheduler`` is a
hot standby). Each tick: move due jobs (scheduled pushes, retry backoffs) into their account queues,
recover sessions whose worker died (about once a second), and look at the accounts that are *due* — the
head of the ``sched`` sorted set, where every idle account with ready jobs waits scored by its next
sendable moment (the way BullMQ Pro picks its next group). Due accounts the pacing rules allow get a
session — a Celery message carrying only ids, run at once — up to the free capacity the workers
announce; the others go back into ``sched`` at the moment they become sendable. A tick's work depends on
the accounts that are due, never on how many accounts exist. Producers and workers push to a ``wake``
list, so a tick follows new work within milliseconds instead of waiting for a poll.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid

import redis
from celery import Celery

from scheduler.dispatch.schedules import Schedules
from scheduler.intake.callbacks import CallbackProcessor
from scheduler.intake.campaigns import Campaigns
from scheduler.intake.producer import Producer
from worker.execution.offline import OfflineRechecks
from worker.pacing.rules import Pacer, RedisClock, read_clock
from worker.settings import Settings
from worker.store import scripts
from worker.store.accounts import AccountStore
from worker.store.contacts import ContactStore
from worker.store.ledger import Claim, Ledger

log = logging.getLogger("broadcast.dispatcher")

#: Sessions in one Celery message at most: a round's sessions travel together (Celery's own work per
#: message is shared), and a worker runs them side by side.
SESSIONS_PER_MESSAGE = 32
#: Shortest dispatcher round: what becomes due or frees up within it is handled together (one TICK, one
#: CLAIM, one Celery message) instead of one round per event. Small against any gap a session does not
#: hold itself (over BROADCAST_SESSION_HOLD_S); at 5 ms, accounts sending once per session travelled two
#: to a message, and the dispatcher and Celery's consumer cost more than the sends (docs/design.md).
ROUND_MIN_S = 0.05
#: Due jobs moved to their queues per PROMOTE_DUE call.
PROMOTE_CHUNK = 1000
#: The leader lock lives 5 s and is renewed this often.
LEADER_RENEW_S = 1.0
#: Recurring schedules and scheduled campaigns are looked at this often (cron has whole seconds).
TIMERS_EVERY_S = 0.2
#: A contact-sync step that finds its account busy looks again this much later (a session in flight was
#: flagged and ends at its next job; its release wakes the dispatcher sooner anyway).
SYNC_BUSY_RETRY_S = 0.05
#: ... and an account that is paused or down this much later.
SYNC_HELD_RETRY_S = 5.0
#: While no contact sync runs, the dispatcher looks for a new one this often (not every round): a sync
#: starts at most this late, and an idle dispatcher makes no extra Redis call per round.
SYNC_IDLE_CHECK_S = 1.0


class Dispatcher:
    """Releases ready jobs to Celery as per-account batches."""

    def __init__(self, settings: Settings, client: redis.Redis, celery: Celery, ledger: Ledger | None = None) -> None:
        self.settings = settings
        self.redis = client
        self.celery = celery
        self.ledger = ledger or Ledger(client, settings.key_prefix)
        accounts = AccountStore(client, settings.key_prefix, secret_keys=settings.secret_keys())
        self.campaigns = Campaigns(self.ledger, accounts)
        producer = Producer(self.ledger, accounts)
        self.schedules = Schedules(client, settings.key_prefix, producer, self.campaigns)
        #: vendor callbacks stored by the API are acted on here (opt-outs, removed contacts, offline)
        self.callbacks = CallbackProcessor(settings, client, accounts, producer, check_offline=self._check_offline)
        self.offline_rechecks = OfflineRechecks(client, settings.key_prefix)
        self.pacer = Pacer(client, settings)
        self.contacts = ContactStore(client, settings.key_prefix)
        self._syncs_checked_at = -SYNC_IDLE_CHECK_S
        self._syncs_running = False
        self.next_delay: float | None = None
        self.identity = uuid.uuid4().hex
        self._renew = scripts.register(client, "leader_renew")
        self._resign = scripts.register(client, "leader_resign")
        self.leader_ttl_ms = 5000
        self._last_housekeeping = 0.0
        self._last_recover = 0.0
        self._last_timers = 0.0
        self._renewed_at = -LEADER_RENEW_S
        #: Dead sessions are found by a scan of the leased accounts; their leases live for seconds.
        self.recover_every_s = settings.lease_ttl_s / 4
        self._capacity: tuple[float, int] = (0.0, 0)
        self._clock: RedisClock | None = None
        client.hset(self.ledger.keys.config, "retention_s", str(int(settings.retention_days * 86400)))

    def is_leader(self) -> bool:
        """Take or keep the leader lock (renewed about once a second; it lives five)."""
        if time.monotonic() - self._renewed_at < LEADER_RENEW_S:
            return True
        if self._renew(args=[self.ledger.keys.p, self.identity, self.leader_ttl_ms]):
            self._renewed_at = time.monotonic()
            return True
        return False

    def tick(self) -> int:
        """One round; returns how many sessions were published."""
        now = time.time()
        if now - self._last_housekeeping > 60 and self.settings.retention_days > 0:
            self._last_housekeeping = now
            self.campaigns.expire_finished(older_than_s=self.settings.retention_days * 86400, now=now)
        if now - self._last_timers >= TIMERS_EVERY_S:  # schedules and campaigns due: whole seconds at best
            self._last_timers = now
            self.schedules.fire_due(now, on_fire=self._announce_firing)
            self.campaigns.activate_due(now)
            try:
                self.callbacks.drain()
                self.offline_rechecks.take_due(self._check_offline, now)
            except redis.ConnectionError:
                raise
            except Exception:  # callbacks must never hold up sending
                log.exception("processing vendor callbacks failed")
        if now - self._last_recover >= self.recover_every_s:
            self._last_recover = now
            requeued, unknown = self.ledger.recover()
            if requeued or unknown:
                log.warning("recovered dead sessions: %d jobs requeued, %d unknown outcomes", requeued, unknown)
        steps, soonest = 0, None
        if now >= self._syncs_checked_at + SYNC_IDLE_CHECK_S or self._syncs_running:
            self._syncs_checked_at = now
            steps, soonest = self.start_contact_steps()
            self._syncs_running = bool(steps) or soonest is not None
        claims = self.release_due()
        self.publish(claims)
        if soonest is not None:  # the next sync step: the idle wait ends then
            later = max(0.0, soonest - time.time())
            self.next_delay = later if self.next_delay is None else min(self.next_delay, later)
        return len(claims) + steps

    def start_contact_steps(self) -> tuple[int, float | None]:
        """Hand out the contact-sync steps that are due, each under its account's lease (one vendor call,
        like a send; never beside one). Runs before the send claims of the round, so a step gets an account
        freed by a session that just ended before its next session is claimed."""
        now = time.time()
        started = 0
        due, soonest = self.contacts.due(now)
        for account in due:
            token = f"csync:{uuid.uuid4().hex}"
            got = self.contacts.begin_step(account, token, ttl_s=self.settings.lease_ttl_s, now=now)
            if got == "1":
                self.celery.send_task(
                    "broadcast.contacts_step", args=[account, token], queue=self.settings.celery_queue
                )
                started += 1
            elif got == "0":
                self.contacts.wait(account, now + SYNC_BUSY_RETRY_S, "")
                soonest = min(soonest or math.inf, now + SYNC_BUSY_RETRY_S)
            elif got in ("paused", "down"):
                self.contacts.wait(account, now + SYNC_HELD_RETRY_S, f"the account is {got}")
                soonest = min(soonest or math.inf, now + SYNC_HELD_RETRY_S)
        return started, soonest

    def release_due(self) -> list[Claim]:
        """Promote what is due, then claim sessions for the due accounts the pacing rules allow, within the
        workers' free capacity; put the others back into ``sched`` at their next sendable moment."""
        k = self.ledger.keys
        rnow = self._redis_time()
        capacity = self.capacity()
        for _ in range(50):  # everything due first, so a session takes all of an account's due jobs at once
            found = self.ledger.tick(now=rnow, capacity=capacity, promote=PROMOTE_CHUNK)
            if found.promoted < PROMOTE_CHUNK:
                break
        if found.free <= 0:
            self.next_delay = None  # nothing can start before a session ends, and its end wakes us
            return []
        self.next_delay = None if found.soonest is None else max(0.0, found.soonest - rnow)
        if not found.due:
            return []
        verdict = self.pacer.verdict(found.due, rnow)
        pipe = self.redis.pipeline(transaction=False)
        if verdict.later:
            pipe.zadd(k.sched, verdict.later)
            later = max(0.0, min(verdict.later.values()) - rnow)
            self.next_delay = later if self.next_delay is None else min(self.next_delay, later)
        if verdict.dropped:
            pipe.zrem(k.sched, *verdict.dropped)
        pipe.execute()
        if not verdict.candidates:
            return []
        return self.ledger.claim(lease_ttl_s=self.settings.lease_ttl_s, candidates=verdict.candidates, now=verdict.now)

    def _redis_time(self) -> float:
        """Redis TIME, read at most once a second and carried forward on the monotonic clock between."""
        if self._clock is None or time.monotonic() - self._clock.synced_at > 1.0:
            self._clock = read_clock(self.redis)
        return self._clock.now()  # the earliest it can be: nothing is found due early

    def capacity(self) -> int:
        """Sessions the live workers can hold at once: their announced concurrency (read once a second)."""
        k = self.ledger.keys
        checked_at, capacity = self._capacity
        if time.monotonic() - checked_at > 1.0:
            live = [str(w) for w in self.redis.zrangebyscore(k.workers, time.time(), "+inf")]
            caps = self.redis.hmget(k.worker_cap, live) if live else []
            capacity = sum(int(c or 0) for c in caps)
            self._capacity = (time.monotonic(), capacity)
        return capacity

    def idle_wait(self) -> float:
        """How long to wait for a wake-up: until the next account becomes sendable, at most the idle poll."""
        wait = self.settings.dispatch_idle_s
        if self.next_delay is not None:
            wait = min(wait, self.next_delay)
        return max(0.001, wait)

    def _announce_firing(self, schedule_id: str, fire_at: float, result: dict[str, object]) -> None:
        """A task per firing, so Flower shows recurring schedules as they fire."""
        log.info("schedule %s fired: %s", schedule_id, result, extra={"schedule": schedule_id})
        self.celery.send_task(
            "broadcast.schedule_fired", args=[schedule_id, fire_at, result], queue=self.settings.celery_queue
        )

    def _check_offline(self, account: str, reason: str, received: float, tries: int = 0) -> None:
        """An ``Offline`` callback goes to a worker, which asks the vendor before the account is marked down
        (worker/execution/offline.py); a vendor call has no place in this loop. Notices to check again come
        back here from Redis (``OfflineRechecks``, taken with the timers)."""
        self.celery.send_task(
            "broadcast.check_offline", args=[account, reason, received, tries], queue=self.settings.celery_queue
        )

    def publish(self, claims: list[Claim]) -> None:
        """Send a round's sessions to Celery, up to SESSIONS_PER_MESSAGE in one message (they run side by
        side in one worker). If this fails the leases expire and the sessions are recovered.

        The task carries ids only; ``info`` (accounts, jobs, kinds, campaigns) is for operators in Flower."""
        for start in range(0, len(claims), SESSIONS_PER_MESSAGE):
            bundle = claims[start : start + SESSIONS_PER_MESSAGE]
            info = {
                "accounts": [c.account for c in bundle][:20],
                "jobs": sum(len(c.job_ids) for c in bundle),
                "kinds": sorted({k for c in bundle for k in c.kinds}),
                "campaigns": sorted({x for c in bundle for x in c.campaigns})[:10],
            }
            self.celery.send_task(
                "broadcast.send_sessions",
                args=[[c.account, c.token, c.job_ids, c.groups] for c in bundle],
                kwargs={"info": info},
                queue=self.settings.celery_queue,
            )

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set."""
        leader = False
        while not stop.is_set():
            try:
                if not self.is_leader():
                    if leader:
                        log.warning("lost the dispatcher lock; standing by")
                    leader = False
                    stop.wait(1.0)
                    continue
                if not leader:
                    log.info("dispatcher is leader (%s)", self.identity[:8])
                leader = True
                started = time.monotonic()
                if self.tick() == 0:
                    self.ledger.wait_for_wake(self.idle_wait())
                # let the sessions ending meanwhile gather, so one round (one Celery message) takes them all
                stop.wait(max(0.0, ROUND_MIN_S - (time.monotonic() - started)))
            except redis.ConnectionError as exc:
                log.error("redis unavailable: %s; retrying", exc)
                stop.wait(1.0)
            except Exception:
                # a bug or a bad record must not stop all dispatching: log it and keep going
                log.exception("dispatcher tick failed; retrying in 1 s")
                stop.wait(1.0)
        self._resign(args=[self.ledger.keys.p, self.identity])
