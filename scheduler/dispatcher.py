"""The dispatcher: decides what runs when, and hands it to Celery.

One leader at a time (a ``SET NX PX`` lock, renewed every tick; a second ``broadcast scheduler`` is a
hot standby). Each tick: move due jobs (scheduled pushes, retry backoffs) into their account queues,
recover batches whose worker died, and give every idle, active account with ready jobs one batch — a
Celery message carrying only ids, run at once. Producers and workers push to a ``wake`` list, so a tick
follows new work within milliseconds instead of waiting for a poll.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import redis
from celery import Celery

from scheduler.campaigns import Campaigns
from scheduler.pacing import Pacer
from scheduler.producer import Producer
from scheduler.schedules import Schedules
from worker.accounts import AccountStore
from worker.ledger import Claim, Ledger
from worker.settings import Settings

log = logging.getLogger("broadcast.dispatcher")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class Dispatcher:
    """Releases ready jobs to Celery as per-account batches."""

    def __init__(self, settings: Settings, client: redis.Redis, celery: Celery, ledger: Ledger | None = None) -> None:
        self.settings = settings
        self.redis = client
        self.celery = celery
        self.ledger = ledger or Ledger(client, settings.key_prefix)
        accounts = AccountStore(client, settings.key_prefix)
        self.campaigns = Campaigns(self.ledger, accounts)
        self.schedules = Schedules(client, settings.key_prefix, Producer(self.ledger, accounts), self.campaigns)
        self.pacer = Pacer(client, settings)
        self.next_delay: float | None = None
        self.identity = uuid.uuid4().hex
        self._renew = client.register_script(_RENEW)
        self._last_recover = 0.0
        self.leader_ttl_ms = 5000
        self._last_housekeeping = 0.0
        client.hset(self.ledger.keys.config, "retention_s", str(int(settings.retention_days * 86400)))

    def is_leader(self) -> bool:
        """Take or keep the leader lock."""
        return bool(self._renew(keys=[self.ledger.keys.leader], args=[self.identity, self.leader_ttl_ms]))

    def tick(self) -> int:
        """One round; returns how many batches were published."""
        now = time.time()
        if now - self._last_housekeeping > 60 and self.settings.retention_days > 0:
            self._last_housekeeping = now
            self.campaigns.expire_finished(older_than_s=self.settings.retention_days * 86400, now=now)
        self.schedules.fire_due(now, on_fire=self._announce_firing)
        self.campaigns.activate_due(now)
        self.ledger.promote_due(now)
        requeued, unknown = self.ledger.recover()
        if requeued or unknown:
            log.warning("recovered dead batches: %d jobs requeued, %d unknown outcomes", requeued, unknown)
        verdict = self.pacer.verdict()
        self.next_delay = None if verdict.next_check is None else verdict.next_check - verdict.now
        claims = self.ledger.claim(
            lease_ttl_s=self.settings.lease_ttl_s, candidates=verdict.candidates, now=verdict.now
        )
        for claim in claims:
            self.publish(claim)
        return len(claims)

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

    def publish(self, claim: Claim) -> None:
        """Send one batch to Celery. If this fails the lease expires and the batch is recovered.

        The task carries ids only; ``info`` (kinds, campaigns, recipients count) is for operators in Flower.
        """
        self.celery.send_task(
            "broadcast.send_batch",
            args=[claim.account, claim.token, claim.job_ids],
            kwargs={"info": self._describe(claim)},
            queue=self.settings.celery_queue,
        )

    def _describe(self, claim: Claim) -> dict[str, object]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in claim.job_ids:
            pipe.hmget(self.ledger.keys.job(job_id), "campaign", "kind")
        kinds: set[str] = set()
        campaigns: set[str] = set()
        for campaign, kind in pipe.execute():
            if campaign:
                campaigns.add(campaign)
                kind = kind or self.redis.hget(self.ledger.keys.campaign(campaign), "kind")
            if kind:
                kinds.add(str(kind))
        return {
            "account": claim.account,
            "jobs": len(claim.job_ids),
            "kinds": sorted(kinds),
            "campaigns": sorted(campaigns)[:10],
        }

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
                if self.tick() == 0:
                    self.ledger.wait_for_wake(self.idle_wait())
            except redis.ConnectionError as exc:
                log.error("redis unavailable: %s; retrying", exc)
                stop.wait(1.0)
            except Exception:
                # a bug or a bad record must not stop all dispatching: log it and keep going
                log.exception("dispatcher tick failed; retrying in 1 s")
                stop.wait(1.0)
        self.redis.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
            1,
            self.ledger.keys.leader,
            self.identity,
        )
