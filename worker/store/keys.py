"""Every Redis key name, built from :data:`LAYOUT` in one place (like ``rq/registry.py``).

Python builds keys with :class:`Keys`; the Lua scripts call ``key_<name>(...)`` functions the loader
(:mod:`worker.store.scripts`) generates from the same table. ``tests/repo/test_layout.py`` fails on a key string
spelled anywhere else.

All keys share a prefix (``BROADCAST_KEY_PREFIX``, default ``bc``) so deployments and test runs can share
one Redis without touching each other's data.

=====================  ======  ==================================================================
key                    type    holds
=====================  ======  ==================================================================
job:{id}               hash    one job: state, account, recipient, message or campaign ref, ids
job:{id}:h             list    attempt history, one JSON entry per attempt
q:{account}            list    ready single-message job ids of an account (FIFO)
qh:{account}           list    ready job ids of an account, high priority (taken first)
cq:{cid}:{account}     list    ready job ids of one campaign for one account
cst:{cid}:{account}    list    a campaign's job ids staged until it goes live
src:{account}          zset    the account's sources ('s', 'c:{cid}') in round-robin order
sched                  zset    idle, active accounts with ready jobs, scored by when the dispatcher
                               should look at them (their next sendable moment; 0 = now)
due                    zset    scheduled and backing-off job ids, scored by due time (epoch s)
lease:{account}        string  the token of the batch in flight for an account (PX TTL)
claimed:{account}      list    job ids handed to the batch in flight (recovered if its lease dies)
seq:{recipient}        string  the sequence job sending its parts to a recipient (PX TTL): no other
                               sequence interleaves in that chat (part.lua)
leased                 set     accounts that have a ``claimed`` list to watch
workers                zset    live worker processes (hostname), scored by heartbeat expiry
worker_cap             hash    hostname -> sends it can hold in flight (its concurrency)
pace:{account}         hash    pacing state: last_end, jitter fraction r, slow-down factor and time,
                               local day and sends on it (daily cap)
pace:{account}:win     list    end times of the last per_minute sends, newest first
vpace:{vendor}         zset    end times of recent sends per vendor (vendor rate)
vendor_limits          hash    vendor -> sends per second across its accounts
dlq                    zset    dead-lettered job ids, scored by time
account:{id}           hash    account config (vendor, base_url, token, instance, limits), status
accounts               set     account ids
campaign:{id}          hash    campaign: name, message template, total, per-state counts
campaign:{id}:jobs     list    the campaign's job ids in recipient order
campaign:{id}:outcomes list    the campaign's latest outcomes, newest first ('+' sent, 'x<error>' dead),
                               the auto-pause window (finish_*.lua)
campaign:{id}:tests    list    ids of the campaign's test sends, newest last
campaigns              zset    campaign ids by creation time
due_campaigns          zset    scheduled campaigns by start time
idem:{m|c}:{key}       string  idempotency key -> the message (m) or campaign (c) id answered first
schedule:{id}          hash    a recurring schedule: cron, timezone, template, last firing
schedules              zset    schedule ids by next fire time
stats:{name}           hash    counters for Prometheus (sends, errors, latency buckets)
supp:{account|*}       hash    suppressed recipients of an account (``*``: every account): wxid -> JSON
                               {reason, at, by, note}; begin.lua skips them
supp_scopes            set     the scopes (account ids, ``*``) that have a ``supp:`` hash
rcap:{account}:{wxid}  zset    campaign sends held or made to a recipient from an account, job id
                               scored by start time (the ``recipient_cap`` window; begin.lua, finish_*.lua)
cbkey:{account}        string  SHA-256 of the account's callback key (``POST …/callback``)
cb:in                  stream  vendor callbacks as received, before processing (store first)
cb:odd                 list    unknown or malformed callback bodies, newest first, kept a while
cb:seen:{account}:{id}  string  a vendor event already processed for the account (dedupe, with a TTL)
cb:replies:{account}:{hour}  string  opt-out replies queued for the account in one hour (bounded, expires)
cb:changes:{account}:{hour}  string  suppressions callbacks added to the account in one hour (capped, expires)
cb:overcap:{account}:{hour}  string  set once the account's callbacks passed the cap in that hour (the
                               one audit marker, expires)
cb:held:{account}      stream  callback changes held over the hourly cap: reason, from, body digest,
                               times; applied by an operator or trimmed by age (bounded)
cb:heldby:{account}    hash    reason + sender -> the held entry's id: one person's change is held once
config                 hash    settings the Lua scripts read (retention_s)
wake                   list    nudges for the dispatcher (new work, finished batch)
dispatcher:leader      string  leader lock of the dispatcher (SET NX PX)
contacts:{account}     string  the account's last synced contacts: zlib-compressed JSON (friends, groups,
                               public accounts apart, labels); read whole (10,000 friends ≈ 0.3 MB)
csync:{account}        hash    the account's contact sync: status, phase, cursor, counts, error, and the
                               last finished sync's counts and time (kept across runs)
csync:{account}:ids    list    a running sync's ids still to be detailed (friends, then groups)
csync:{account}:rows   list    a running sync's detail answers so far, one compact JSON batch per call
csync_due              zset    accounts whose sync has a step to run, scored by when it may run (the
                               contact calls' own gap; a running step pushes it one lease TTL ahead)
opkey:{name}           hash    an operator key: role, SHA-256 of the key, created, last used, rate
opkeys                 hash    SHA-256 of a key (hex) -> its name (the lookup; never the key itself)
opmsgs:{name}          zset    the single messages an operator key submitted, by time (kept as long as jobs):
                               its revocation cancels those not sent yet
oprate:{name}:{minute} string  requests of a key in one minute (per-key rate limit, expires)
minutes:{hour}         hash    outcomes per minute for the console's charts: '{cid|-}|{minute}|{s|r|x}' -> n
audit                  stream  who did what: key, role, action, target, status (trimmed by age)
audit_refused:{name}:{minute}  string  refused calls (4xx) of a key recorded in one minute (capped, expires)
=====================  ======  ==================================================================
"""

from __future__ import annotations

from typing import Final

#: name -> template after the prefix (``{}`` = one part). The only place key names are spelled.
LAYOUT: Final[dict[str, str]] = {
    "job": "job:{}",
    "history": "job:{}:h",
    "queue": "q:{}",
    "queue_high": "qh:{}",
    "sources": "src:{}",
    "campaign_queue": "cq:{}:{}",
    "campaign_staging": "cst:{}:{}",
    "lease": "lease:{}",
    "pace": "pace:{}",
    "pace_window": "pace:{}:win",
    "vendor_pace": "vpace:{}",
    "vendor_limits": "vendor_limits",
    "claimed": "claimed:{}",
    "seq_lock": "seq:{}",
    "account": "account:{}",
    "campaign": "campaign:{}",
    "campaign_jobs": "campaign:{}:jobs",
    "campaign_outcomes": "campaign:{}:outcomes",
    "campaign_tests": "campaign:{}:tests",
    "idempotency": "idem:{}:{}",
    "sched": "sched",
    "workers": "workers",
    "worker_cap": "worker_cap",
    "due": "due",
    "leased": "leased",
    "dlq": "dlq",
    "accounts": "accounts",
    "campaigns": "campaigns",
    "schedule": "schedule:{}",
    "schedules": "schedules",
    "stat": "stats:{}",
    "due_campaigns": "due_campaigns",
    "suppressions": "supp:{}",
    "suppression_scopes": "supp_scopes",
    "recipient_sends": "rcap:{}:{}",
    "callback_key": "cbkey:{}",
    "callback_inbox": "cb:in",
    "callback_odd": "cb:odd",
    "callback_seen": "cb:seen:{}",
    "callback_inbox_bytes": "cb:in:bytes",
    "optout_replies": "cb:replies:{}:{}",
    "callback_changes": "cb:changes:{}:{}",
    "offline_checks": "cb:offline:{}:{}",
    "offline_rechecks": "cb:offline_rechecks",
    "callback_over_cap": "cb:overcap:{}:{}",
    "callback_held": "cb:held:{}",
    "callback_held_index": "cb:heldby:{}",
    "config": "config",
    "wake": "wake",
    "leader": "dispatcher:leader",
    "contacts": "contacts:{}",
    "contact_sync": "csync:{}",
    "contact_sync_ids": "csync:{}:ids",
    "contact_sync_rows": "csync:{}:rows",
    "contact_sync_due": "csync_due",
    "operator_key": "opkey:{}",
    "operator_keys": "opkeys",
    "key_messages": "opmsgs:{}",
    "operator_rate": "oprate:{}:{}",
    "audit": "audit",
    "audit_refused": "audit_refused:{}:{}",
    "minutes": "minutes:{}",
}


class Keys:
    """Key builder for one prefix."""

    __slots__ = ("p",)

    def __init__(self, prefix: str) -> None:
        self.p = prefix

    def _key(self, name: str, *parts: str) -> str:
        return f"{self.p}:{LAYOUT[name].format(*parts)}"

    def job(self, job_id: str) -> str:
        return self._key("job", job_id)

    def history(self, job_id: str) -> str:
        return self._key("history", job_id)

    def queue(self, account: str) -> str:
        return self._key("queue", account)

    def queue_high(self, account: str) -> str:
        return self._key("queue_high", account)

    def sources(self, account: str) -> str:
        return self._key("sources", account)

    def campaign_queue(self, campaign_id: str, account: str) -> str:
        return self._key("campaign_queue", campaign_id, account)

    def campaign_staging(self, campaign_id: str, account: str) -> str:
        return self._key("campaign_staging", campaign_id, account)

    def lease(self, account: str) -> str:
        return self._key("lease", account)

    def pace(self, account: str) -> str:
        return self._key("pace", account)

    def pace_window(self, account: str) -> str:
        return self._key("pace_window", account)

    def vendor_pace(self, vendor: str) -> str:
        return self._key("vendor_pace", vendor)

    @property
    def vendor_limits(self) -> str:
        return self._key("vendor_limits")

    def seq_lock(self, recipient: str) -> str:
        return self._key("seq_lock", recipient)

    def claimed(self, account: str) -> str:
        return self._key("claimed", account)

    def account(self, account: str) -> str:
        return self._key("account", account)

    def campaign(self, campaign_id: str) -> str:
        return self._key("campaign", campaign_id)

    def campaign_jobs(self, campaign_id: str) -> str:
        return self._key("campaign_jobs", campaign_id)

    def campaign_outcomes(self, campaign_id: str) -> str:
        return self._key("campaign_outcomes", campaign_id)

    def campaign_tests(self, campaign_id: str) -> str:
        return self._key("campaign_tests", campaign_id)

    def idempotency(self, kind: str, key: str) -> str:
        """``kind``: ``m`` for messages, ``c`` for campaigns (separate namespaces)."""
        return self._key("idempotency", kind, key)

    @property
    def sched(self) -> str:
        return self._key("sched")

    @property
    def workers(self) -> str:
        return self._key("workers")

    @property
    def worker_cap(self) -> str:
        return self._key("worker_cap")

    @property
    def due(self) -> str:
        return self._key("due")

    @property
    def leased(self) -> str:
        return self._key("leased")

    @property
    def dlq(self) -> str:
        return self._key("dlq")

    @property
    def accounts(self) -> str:
        return self._key("accounts")

    @property
    def campaigns(self) -> str:
        return self._key("campaigns")

    def schedule(self, schedule_id: str) -> str:
        return self._key("schedule", schedule_id)

    @property
    def schedules(self) -> str:
        return self._key("schedules")

    def stat(self, name: str) -> str:
        return self._key("stat", name)

    @property
    def due_campaigns(self) -> str:
        return self._key("due_campaigns")

    def suppressions(self, scope: str) -> str:
        """``scope``: an account id, or ``*`` for every account."""
        return self._key("suppressions", scope)

    @property
    def suppression_scopes(self) -> str:
        return self._key("suppression_scopes")

    def recipient_sends(self, account: str, to: str) -> str:
        return self._key("recipient_sends", account, to)

    def callback_key(self, account: str) -> str:
        return self._key("callback_key", account)

    @property
    def callback_inbox(self) -> str:
        return self._key("callback_inbox")

    @property
    def callback_odd(self) -> str:
        return self._key("callback_odd")

    def callback_seen(self, event_id: str) -> str:
        return self._key("callback_seen", event_id)

    @property
    def callback_inbox_bytes(self) -> str:
        return self._key("callback_inbox_bytes")

    def optout_replies(self, account_id: str, hour: int) -> str:
        return self._key("optout_replies", account_id, str(hour))

    def callback_changes(self, account_id: str, hour: int) -> str:
        return self._key("callback_changes", account_id, str(hour))

    def offline_checks(self, account_id: str, hour: int) -> str:
        return self._key("offline_checks", account_id, str(hour))

    @property
    def offline_rechecks(self) -> str:
        return self._key("offline_rechecks")

    def callback_over_cap(self, account_id: str, hour: int) -> str:
        return self._key("callback_over_cap", account_id, str(hour))

    def callback_held(self, account_id: str) -> str:
        return self._key("callback_held", account_id)

    def callback_held_index(self, account_id: str) -> str:
        return self._key("callback_held_index", account_id)

    @property
    def config(self) -> str:
        return self._key("config")

    @property
    def wake(self) -> str:
        return self._key("wake")

    @property
    def leader(self) -> str:
        return self._key("leader")

    def contacts(self, account: str) -> str:
        return self._key("contacts", account)

    def contact_sync(self, account: str) -> str:
        return self._key("contact_sync", account)

    def contact_sync_ids(self, account: str) -> str:
        return self._key("contact_sync_ids", account)

    def contact_sync_rows(self, account: str) -> str:
        return self._key("contact_sync_rows", account)

    @property
    def contact_sync_due(self) -> str:
        return self._key("contact_sync_due")

    def operator_key(self, name: str) -> str:
        return self._key("operator_key", name)

    @property
    def operator_keys(self) -> str:
        return self._key("operator_keys")

    def key_messages(self, name: str) -> str:
        return self._key("key_messages", name)

    def operator_rate(self, name: str, minute: int) -> str:
        return self._key("operator_rate", name, str(minute))

    @property
    def audit(self) -> str:
        return self._key("audit")

    def audit_refused(self, name: str, minute: int) -> str:
        return self._key("audit_refused", name, str(minute))

    def minutes(self, hour: int) -> str:
        """Per-minute outcome counts of one hour (epoch hour) for the console's charts."""
        return self._key("minutes", str(hour))
