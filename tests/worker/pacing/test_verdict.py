"""The dispatcher's pacing verdict against a real Redis: accounts from AccountStore, pace state from FINISH."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import cast
from zoneinfo import ZoneInfo

import pytest
import redis as redis_lib

from worker.messages import TextMessage
from worker.pacing.rules import (
    WINDOW_MARGIN_S,
    WINDOW_S,
    Pacer,
    PaceState,
    Verdict,
    local_day,
    next_local_midnight,
    quiet_until,
    redis_now,
    throttled_slowdown,
)
from worker.settings import Settings
from worker.store.accounts import AccountSpec, AccountStore, Limits, QuietHours, Status
from worker.store.ledger import Ledger, PaceRecord
from worker.vendors.base import SendResult

LEASE_S = 30.0
MS = 1e-3


@dataclass
class Env:
    redis: redis_lib.Redis
    prefix: str
    ledger: Ledger
    accounts: AccountStore

    def pacer(self, clock_offset_s: float = 0.0) -> SchedPacer:
        settings = Settings(key_prefix=self.prefix, clock_offset_s=clock_offset_s, batch_size=50)
        return SchedPacer(self, Pacer(self.redis, settings))

    def add(self, account: str, vendor: str = "gewe", **limits: object) -> str:
        spec = AccountSpec.model_validate(
            {
                "vendor": vendor,
                "base_url": "http://127.0.0.1:9/api",
                "token": "secret-token",
                "instance": f"inst-{account}",
                "limits": limits,
            }
        )
        self.accounts.put(account, spec)
        return account

    def submit(self, account: str, to: str = "wxid_friend") -> str:
        job_id, created, _ = self.ledger.submit(account=account, to=to, message=TextMessage(text="hi"))
        assert created
        return job_id

    def send_one(
        self,
        account: str,
        *,
        to: str = "wxid_friend",
        jitter_fraction: float = 0.0,
        throttled: bool = False,
        clock_offset_s: float = 0.0,
        vendor: str = "",
    ) -> float:
        """Submit a job, then claim, send and release the account's next job the way a worker does;
        returns the recorded last_end."""
        self.submit(account, to)
        claims = self.ledger.claim(lease_ttl_s=LEASE_S, candidates=[(account, 1, 0.0, 0.0)])
        assert [len(c.job_ids) for c in claims] == [1]
        token, job_id = claims[0].token, claims[0].job_ids[0]
        begin = self.ledger.begin(account, token, job_id, lease_ttl_s=LEASE_S)
        assert begin.status == "go"
        stored = self.accounts.get(account)
        assert stored is not None
        limits = stored.spec.limits
        keys = self.ledger.keys
        state = PaceState.from_redis(
            self.redis.hgetall(keys.pace(account)), self.redis.lrange(keys.pace_window(account), 0, -1)
        )
        now = redis_now(self.redis)
        day = local_day(now + clock_offset_s, limits.timezone)
        record = PaceRecord(
            ended=now,
            fraction=jitter_fraction,
            slowdown=throttled_slowdown(state, now) if throttled else None,
            day=day,
            day_sends=state.sent_on(day) + 1,
            sent=True,
            keep=limits.per_minute,
            vendor=vendor,
        )
        result = SendResult(vendor="gewe", to=to, endpoint="/message/postText", new_msg_id=1)
        finished = self.ledger.finish_sent(account, token, job_id, result, {"event": "sent"}, pace=record)
        assert finished.status == "ok"
        self.ledger.release(account, token)
        return float(self.redis.hget(self.ledger.keys.pace(account), "last_end") or 0)


@dataclass
class SchedPacer:
    """The dispatcher's view: the pacing verdict for the accounts waiting in ``sched``."""

    env: Env
    pacer: Pacer

    def verdict(self) -> Verdict:
        accounts = [str(a) for a in self.env.redis.zrange(self.env.ledger.keys.sched, 0, -1)]
        return self.pacer.verdict(accounts)


@pytest.fixture
def env(redis_url: str) -> Iterator[Env]:
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"u{uuid.uuid4().hex[:8]}"
    yield Env(client, prefix, Ledger(client, prefix), AccountStore(client, prefix))
    stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if stale:
        client.delete(*stale)
    client.close()


def candidate_ids(verdict: Verdict) -> list[str]:
    return [c[0] for c in verdict.candidates]


def wait_redis_until(client: redis_lib.Redis, moment: float) -> None:
    """Sleep until Redis TIME has reached ``moment`` (the pacing clock, not the local one)."""
    while (remaining := moment - redis_now(client)) > 0:
        time.sleep(remaining + 0.002)


# --- candidates and gaps ---------------------------------------------------------------------------------


def test_fresh_account_is_a_candidate_at_once(env: Env) -> None:
    a = env.add("fresh", per_minute=30, min_interval_s=5, jitter_s=5)
    env.submit(a)
    verdict = env.pacer().verdict()
    assert candidate_ids(verdict) == [a]
    account, batch, private_at, group_at = verdict.candidates[0]
    assert account == a
    assert batch == 30  # a session may take up to per_minute jobs; the worker paces them
    assert private_at <= verdict.now
    assert group_at <= verdict.now
    assert verdict.blocked == {}
    assert verdict.next_check is None


def test_no_ready_accounts_gives_an_empty_verdict(env: Env) -> None:
    env.add("idle")
    verdict = env.pacer().verdict()
    assert verdict.candidates == []
    assert verdict.next_check is None
    assert verdict.blocked == {}


def test_unpaced_account_gets_the_configured_batch(env: Env) -> None:
    a = env.add("unpaced", per_minute=0)
    env.submit(a)
    verdict = env.pacer().verdict()
    assert verdict.candidates == [(a, 50, 0.0, 0.0)]


def test_after_release_the_account_waits_for_last_end_plus_gap(env: Env) -> None:
    a = env.add("gapped", per_minute=30, min_interval_s=4, jitter_s=2, group_min_interval_s=10, group_jitter_s=4)
    last_end = env.send_one(a, jitter_fraction=0.5)
    env.submit(a)
    verdict = env.pacer().verdict()
    assert a not in candidate_ids(verdict)
    assert verdict.blocked == {a: "gap"}
    assert verdict.next_check is not None
    assert verdict.next_check == pytest.approx(last_end + 4 + 2 * 0.5, abs=MS)
    assert last_end <= verdict.now < verdict.next_check


def test_account_becomes_a_candidate_once_the_gap_has_passed(env: Env) -> None:
    a = env.add("short", per_minute=600, min_interval_s=0.2, jitter_s=0.2, group_min_interval_s=0.3, group_jitter_s=0)
    last_end = env.send_one(a, jitter_fraction=0.25)
    env.submit(a)
    pacer = env.pacer()
    before = pacer.verdict()
    assert candidate_ids(before) == []
    assert before.next_check == pytest.approx(last_end + 0.25, abs=MS)
    assert before.next_check is not None
    wait_redis_until(env.redis, before.next_check)
    after = pacer.verdict()
    assert candidate_ids(after) == [a]
    assert after.candidates[0][2] == pytest.approx(last_end + 0.25, abs=MS)


def test_only_the_private_gap_passed_still_a_candidate_with_the_group_time(env: Env) -> None:
    a = env.add("mixed", per_minute=600, min_interval_s=0, jitter_s=0, group_min_interval_s=30, group_jitter_s=0)
    last_end = env.send_one(a)
    env.submit(a)
    verdict = env.pacer().verdict()
    assert candidate_ids(verdict) == [a]
    _, _, private_at, group_at = verdict.candidates[0]
    assert private_at == pytest.approx(last_end, abs=MS)
    assert group_at == pytest.approx(last_end + 30, abs=MS)
    # CLAIM takes the private head now; a group head would put the account back at group_at
    assert verdict.next_check is None


def test_leased_account_is_not_a_candidate(env: Env) -> None:
    a = env.add("busy", per_minute=0)
    env.submit(a)
    env.submit(a)
    claims = env.ledger.claim(lease_ttl_s=LEASE_S, candidates=[(a, 1, 0.0, 0.0)])
    assert len(claims) == 1
    verdict = env.pacer().verdict()
    assert verdict.candidates == []
    assert verdict.blocked == {}


@pytest.mark.parametrize("status", ["paused", "down"])
def test_paused_or_down_account_is_never_a_candidate(env: Env, status: str) -> None:
    a = env.add("stopped", per_minute=0)
    b = env.add("running", per_minute=0)
    env.submit(a)
    env.submit(b)
    env.accounts.set_status(a, cast(Status, status), "vendor says offline")
    verdict = env.pacer().verdict()
    assert candidate_ids(verdict) == [b]
    assert a not in verdict.blocked
    # and CLAIM does not hand it jobs even when asked directly
    assert env.ledger.claim(lease_ttl_s=LEASE_S, candidates=[(a, 1, 0.0, 0.0)]) == []
    env.accounts.set_status(a, "active")
    assert a in candidate_ids(env.pacer().verdict())


# --- per-minute window, slow-down ------------------------------------------------------------------------


def test_per_minute_window_blocks_until_the_oldest_send_leaves_it(env: Env) -> None:
    a = env.add("minute", per_minute=2, min_interval_s=0, jitter_s=0, group_min_interval_s=0, group_jitter_s=0)
    first = env.send_one(a)
    env.send_one(a)
    env.submit(a)
    verdict = env.pacer().verdict()
    assert candidate_ids(verdict) == []
    assert verdict.blocked == {a: "per_minute"}
    assert verdict.next_check == pytest.approx(first + WINDOW_S + WINDOW_MARGIN_S, abs=MS)


def test_window_entries_count_for_sixty_seconds(env: Env) -> None:
    """Entries as FINISH writes them (end times, newest first), older than the send just made."""
    a = env.add("older", per_minute=2, min_interval_s=0, jitter_s=0, group_min_interval_s=0, group_jitter_s=0)
    env.submit(a)
    now = redis_now(env.redis)
    win = env.ledger.keys.pace_window(a)
    env.redis.lpush(win, f"{now - 90:.6f}", f"{now - 75:.6f}")
    assert candidate_ids(env.pacer().verdict()) == [a]  # both left the window

    env.redis.lpush(win, f"{now - 45:.6f}", f"{now - 40:.6f}")
    verdict = env.pacer().verdict()
    assert verdict.blocked == {a: "per_minute"}
    assert verdict.next_check == pytest.approx(now - 45 + WINDOW_S + WINDOW_MARGIN_S, abs=MS)


def test_throttling_multiplies_the_gap_and_caps_at_sixteen(env: Env) -> None:
    a = env.add("throttled", per_minute=600, min_interval_s=1, jitter_s=0, group_min_interval_s=1, group_jitter_s=0)
    last_end = env.send_one(a, throttled=True)
    assert float(env.redis.hget(env.ledger.keys.pace(a), "slow") or 0) == 2
    env.submit(a)
    verdict = env.pacer().verdict()
    assert verdict.next_check == pytest.approx(last_end + 2, abs=MS)
    for _ in range(5):
        last_end = env.send_one(a, throttled=True)
    assert float(env.redis.hget(env.ledger.keys.pace(a), "slow") or 0) == 16
    verdict = env.pacer().verdict()
    assert verdict.blocked == {a: "gap"}
    assert verdict.next_check == pytest.approx(last_end + 16, abs=MS)


# --- daily cap -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/Los_Angeles"])
def test_daily_cap_reached_blocks_until_local_midnight(env: Env, tz: str) -> None:
    a = env.add(
        "capped", per_minute=600, min_interval_s=0, jitter_s=0, group_min_interval_s=0, daily_cap=2, timezone=tz
    )
    env.send_one(a)
    env.submit(a)
    assert candidate_ids(env.pacer().verdict()) == [a]  # one of two sent
    env.send_one(a)
    env.submit(a)
    verdict = env.pacer().verdict()
    assert candidate_ids(verdict) == []
    assert verdict.blocked == {a: "daily_cap"}
    assert verdict.next_check == pytest.approx(next_local_midnight(verdict.now, tz), abs=MS)
    day = local_day(verdict.now, tz)
    pace = env.redis.hgetall(env.ledger.keys.pace(a))
    assert (pace["day"], pace["day_n"]) == (day, "2")


def test_daily_cap_of_an_unpaced_account_blocks_it(env: Env) -> None:
    a = env.add("capped0", per_minute=0, daily_cap=1)
    env.send_one(a)
    env.submit(a)
    verdict = env.pacer().verdict()
    assert candidate_ids(verdict) == []
    assert verdict.blocked == {a: "daily_cap"}


# --- vendor rate -----------------------------------------------------------------------------------------


def test_vendor_limit_caps_candidates(env: Env) -> None:
    accounts = [env.add(f"v{i}", per_minute=0) for i in range(3)]
    other = env.add("other", vendor="ecloud", per_minute=0)
    for a in [*accounts, other]:
        env.submit(a)
    assert sorted(candidate_ids(env.pacer().verdict())) == sorted([*accounts, other])

    env.redis.hset(env.ledger.keys.vendor_limits, "gewe", 2)
    verdict = env.pacer().verdict()
    gewe = [a for a in candidate_ids(verdict) if a != other]
    assert gewe == accounts[:2]
    assert other in candidate_ids(verdict)  # another vendor is not limited
    assert accounts[2] in verdict.blocked
    assert all(batch <= 2 for account, batch, *_ in verdict.candidates if account != other)
    assert verdict.next_check == pytest.approx(verdict.now + 1.0, abs=MS)


def test_vendor_window_from_release_blocks_the_vendor(env: Env) -> None:
    # the waiting account sorts first in sched: it gets the vendor's next slot
    b = env.add("a-waiting", per_minute=0)
    a = env.add("z-sender", per_minute=0)
    env.redis.hset(env.ledger.keys.vendor_limits, "gewe", 1)
    last_end = env.send_one(a, vendor="gewe")
    env.submit(b)
    env.submit(a)
    assert env.redis.zcard(env.ledger.keys.vendor_pace("gewe")) == 1
    verdict = env.pacer().verdict()
    assert candidate_ids(verdict) == []  # one gewe send ended under a second ago
    assert verdict.next_check == pytest.approx(last_end + 1.0, abs=MS)
    wait_redis_until(env.redis, last_end + 1.0)
    after = env.pacer().verdict()
    assert candidate_ids(after) == [b]
    assert a in after.blocked  # the vendor's one send a second went to b


def test_a_vendor_rate_under_one_a_second_remembers_its_last_send_for_a_whole_gap(env: Env) -> None:
    # 0.25/s is a 4 s gap: a send 2.5 s ago must still block (the window read once covered only 2 s)
    b = env.add("a-waiting", per_minute=0)
    a = env.add("z-sender", per_minute=0)
    env.redis.hset(env.ledger.keys.vendor_limits, "gewe", 0.25)
    env.send_one(a, vendor="gewe")
    vkey = env.ledger.keys.vendor_pace("gewe")
    (member,) = env.redis.zrange(vkey, 0, -1)
    earlier = redis_now(env.redis) - 2.5  # members are "<end>:<token>", scored by end
    env.redis.delete(vkey)
    env.redis.zadd(vkey, {f"{earlier:.6f}:{member.split(':', 1)[1]}": earlier})
    env.submit(b)
    verdict = env.pacer().verdict()
    assert candidate_ids(verdict) == []
    assert verdict.next_check == pytest.approx(earlier + 4.0, abs=MS)


# --- CLAIM and the group gap -----------------------------------------------------------------------------


def test_claim_respects_group_at_for_a_group_head(env: Env) -> None:
    a = env.add("grp", per_minute=600)
    job = env.submit(a, to="12345@chatroom")
    now = redis_now(env.redis)
    only_private = [(a, 1, now - 1, now + 30)]
    assert env.ledger.claim(lease_ttl_s=LEASE_S, candidates=only_private, now=now) == []
    stored = env.ledger.get(job)
    assert stored is not None
    assert stored.state == "queued"
    # still waiting, not dropped: back in sched at the moment groups become sendable
    assert env.redis.zscore(env.ledger.keys.sched, a) == pytest.approx(now + 30, abs=MS)
    claims = env.ledger.claim(lease_ttl_s=LEASE_S, candidates=[(a, 1, now - 1, now - 1)], now=now)
    assert [c.job_ids for c in claims] == [[job]]


def test_claim_takes_a_private_head_when_only_private_at_passed(env: Env) -> None:
    a = env.add("prv", per_minute=600)
    private = env.submit(a, to="wxid_friend")
    group = env.submit(a, to="12345@chatroom")
    now = redis_now(env.redis)
    claims = env.ledger.claim(lease_ttl_s=LEASE_S, candidates=[(a, 2, now - 1, now + 30)], now=now)
    # the first job may start now; the session's worker paces the group job (flagged '1') at its own gap
    assert [(c.job_ids, c.groups) for c in claims] == [([private, group], "01")]


def test_verdict_group_time_keeps_claim_from_taking_a_group_job(env: Env) -> None:
    a = env.add("flow", per_minute=600, min_interval_s=0, jitter_s=0, group_min_interval_s=30, group_jitter_s=0)
    env.send_one(a)
    group_job = env.submit(a, to="999@chatroom")
    verdict = env.pacer().verdict()
    assert candidate_ids(verdict) == [a]
    assert env.ledger.claim(lease_ttl_s=LEASE_S, candidates=verdict.candidates, now=verdict.now) == []
    stored = env.ledger.get(group_job)
    assert stored is not None
    assert stored.state == "queued"


# --- clock offset (local-time rules only) ----------------------------------------------------------------


def test_clock_offset_moves_the_quiet_hours_decision(env: Env) -> None:
    tz = ZoneInfo("Asia/Shanghai")
    hour = datetime.fromtimestamp(redis_now(env.redis), tz).hour
    # quiet from two to five hours from now: outside on the real clock, inside three hours later
    quiet = QuietHours(start=f"{(hour + 2) % 24:02d}:00", end=f"{(hour + 5) % 24:02d}:00")
    a = env.add("quiet", per_minute=30, quiet_hours=quiet.model_dump())
    env.submit(a)
    limits = Limits(per_minute=30, quiet_hours=quiet)

    plain = env.pacer().verdict()
    assert candidate_ids(plain) == [a]

    offset = 3 * 3600.0
    shifted = env.pacer(clock_offset_s=offset).verdict()
    assert candidate_ids(shifted) == []
    assert shifted.blocked == {a: "quiet_hours"}
    quiet_end = quiet_until(limits, shifted.now + offset)
    assert quiet_end is not None
    # the quiet end is reported on the Redis clock: between one and two hours from now
    assert shifted.next_check == pytest.approx(quiet_end - offset, abs=MS)
    assert shifted.next_check is not None
    assert 3000 < shifted.next_check - shifted.now <= 7200


def test_clock_offset_moves_the_daily_counter_day(env: Env) -> None:
    tz = "Asia/Shanghai"
    a = env.add("offday", per_minute=0, daily_cap=1, timezone=tz)
    offset = 86400.0
    env.send_one(a, clock_offset_s=offset)  # counted on "tomorrow"
    env.submit(a)
    assert candidate_ids(env.pacer().verdict()) == [a]  # today has no sends
    shifted = env.pacer(clock_offset_s=offset).verdict()
    assert shifted.blocked == {a: "daily_cap"}


@pytest.mark.parametrize("offset", [3600.0, -3600.0])
def test_clock_offset_does_not_shift_the_gap(env: Env, offset: float) -> None:
    a = env.add("offgap", per_minute=30, min_interval_s=20, jitter_s=0, group_min_interval_s=20, group_jitter_s=0)
    last_end = env.send_one(a, clock_offset_s=offset)
    env.submit(a)
    verdict = env.pacer(clock_offset_s=offset).verdict()
    assert candidate_ids(verdict) == []
    assert verdict.next_check == pytest.approx(last_end + 20, abs=MS)
