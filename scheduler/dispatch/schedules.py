"""Recurring schedules: a cron expression, a timezone and a message or campaign template.

One source of truth, in Redis: a hash per schedule and one sorted set of next fire times, read only by
the dispatcher leader (so a schedule fires once even with a hot standby). When a schedule is due the
dispatcher moves its next fire time forward and submits the message or campaign with the idempotency key
``schedule:{id}:{fire time}`` — a repeated fire (crash, failover) creates nothing twice — then publishes a
``broadcast.schedule_fired`` task so each firing shows in Flower.

Cron: five fields (minute hour day month weekday), or six with seconds last (``* * * * * */10``),
evaluated in the schedule's timezone (croniter).

Fan-out is bounded: a schedule is validated at creation exactly as its message or campaign would be at
submission (accounts, recipients, variables, rendered sizes); a cron firing more often than
``BROADCAST_SCHEDULE_MIN_INTERVAL_S`` is refused, and so is one whose recipients × firings in an hour pass
``BROADCAST_SCHEDULE_MAX_JOBS_PER_HOUR``. Both are enforced again when it fires (settings may change).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

import redis
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from redis.exceptions import WatchError

from scheduler.intake.audience import AudienceError, AudienceIn
from scheduler.intake.campaigns import Campaigns
from scheduler.intake.producer import RECIPIENT_MAX, Producer, UnknownAccountError, validate_recipient
from worker.errors import BroadcastError, MessageError
from worker.messages import Message, check_text, check_variables
from worker.settings import Settings, get_settings, known_zone
from worker.store.accounts import ACCOUNT_ID_MAX
from worker.store.keys import Keys
from worker.store.ledger import Priority
from worker.vendors import check_message_for


class MessageTemplate(BaseModel):
    """What a schedule sends each time: one message."""

    model_config = ConfigDict(extra="forbid")
    account: str = Field(min_length=1, max_length=ACCOUNT_ID_MAX)
    to: str = Field(min_length=1, max_length=RECIPIENT_MAX)
    message: Message
    vars: dict[str, str] | None = None
    priority: Priority = "normal"


class RecipientTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=RECIPIENT_MAX)
    account: str | None = None
    vars: dict[str, str] | None = None


class CampaignTemplate(BaseModel):
    """What a schedule sends each time: a campaign."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    account: str | None = None
    accounts: list[str] | None = None
    recipients: list[RecipientTemplate] = Field(default_factory=list, max_length=100_000)
    #: resolved at each firing against the accounts' last contact sync (checked at creation the same way)
    audience: AudienceIn | None = None
    message: Message
    priority: Priority = "normal"

    @model_validator(mode="after")
    def _someone(self) -> CampaignTemplate:
        if not self.recipients and self.audience is None:
            raise ValueError("give recipients, an audience, or both")
        return self


class OwnerRevoked(Exception):
    """Resuming a schedule whose key was revoked needs an admin; ``args[0]`` the schedule's id."""


class ScheduleSpec(BaseModel):
    """``POST /v1/schedules``: exactly one of ``message`` or ``campaign``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=200)
    cron: str = Field(min_length=9, max_length=200, description="5 fields, or 6 with seconds last")
    timezone: str = "Asia/Shanghai"
    message: MessageTemplate | None = None
    campaign: CampaignTemplate | None = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if len(value.split()) not in (5, 6) or not croniter.is_valid(value):
            raise ValueError("not a valid cron expression (5 fields, or 6 with seconds last)")
        try:  # a date that never comes (31 February) never comes in any timezone
            next_fire(value, "UTC", time.time())
        except Exception:  # noqa: BLE001 - croniter raises several types for dates that never come
            raise ValueError(f"cron {value!r} never fires") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, value: str) -> str:
        return known_zone(value)

    @model_validator(mode="after")
    def _one_template(self) -> ScheduleSpec:
        if (self.message is None) == (self.campaign is None):
            raise ValueError("give exactly one of message or campaign")
        return self


def _cron_values(field: list[Any], size: int) -> list[int]:
    return list(range(size)) if field == ["*"] else sorted({int(v) for v in field})


def _tightest(values: list[int], size: int) -> int:
    """The smallest step between two values of a cron field, counting the wrap to the next period."""
    if len(values) < 2:
        return size
    steps = [b - a for a, b in itertools.pairwise(values)]
    return min([*steps, size - values[-1] + values[0]])


def cron_fan_out(cron: str) -> tuple[float, int]:
    """(shortest possible gap between two firings in seconds, most firings in any one hour).

    Read from the expanded fields, not by sampling: any 3600-second window holds each (minute, second)
    pair at most once, so firings an hour are at most |minutes| × |seconds|; the gap is set by the finest
    field with more than one value, assuming the next period follows at once (a safe lower bound)."""
    expanded = croniter(cron).expanded
    minutes, hours = _cron_values(expanded[0], 60), _cron_values(expanded[1], 24)
    seconds = _cron_values(expanded[5], 60) if len(expanded) > 5 else [0]
    if len(seconds) > 1:
        gap = _tightest(seconds, 60)
    elif len(minutes) > 1:
        gap = 60 * _tightest(minutes, 60)
    elif len(hours) > 1:
        gap = 3600 * _tightest(hours, 24)
    else:
        gap = 86400
    return float(gap), len(minutes) * len(seconds)


def next_fire(cron: str, timezone: str, after: float) -> float:
    """The first fire time strictly after ``after`` (epoch seconds)."""
    start = datetime.fromtimestamp(after, ZoneInfo(timezone))
    return float(croniter(cron, start).get_next(float))


class Schedules:
    """CRUD for schedules and the dispatcher's firing step."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        producer: Producer,
        campaigns: Campaigns,
        settings: Settings | None = None,
    ) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.producer = producer
        self.campaigns = campaigns
        self.settings = settings or get_settings()

    def check(self, spec: ScheduleSpec) -> int:
        """Validate the template exactly as a submission would be, and the fan-out; returns jobs a firing
        creates. Raises :class:`MessageError` naming the field (``message.vars``, ``campaign.recipients[3].to``…)."""
        gap, per_hour = cron_fan_out(spec.cron)
        if gap < self.settings.schedule_min_interval_s:
            raise MessageError(
                f"cron: fires every {gap:g} s at times, more often than every "
                f"{self.settings.schedule_min_interval_s:g} s (BROADCAST_SCHEDULE_MIN_INTERVAL_S)",
                field="cron",
            )
        check_text(spec.name, "name")
        if spec.message is not None:
            size = self._check_message(spec.message)
        else:
            assert spec.campaign is not None
            size = self._check_campaign(spec.campaign)
        cap = self.settings.schedule_max_jobs_per_hour
        if size * per_hour > cap:
            raise MessageError(
                f"cron: {size} job(s) × up to {per_hour} firing(s) an hour is over {cap} jobs an hour "
                "(BROADCAST_SCHEDULE_MAX_JOBS_PER_HOUR)",
                field="cron",
            )
        return size

    def _check_message(self, t: MessageTemplate) -> int:
        try:
            check_text(t.account, "account")
            configured = self.producer.accounts.get(t.account)
            if configured is None:
                raise UnknownAccountError(f"account: no account {t.account!r} is configured", field="account")
            check_message_for(configured.spec.vendor, t.message)
            validate_recipient(t.to)
            check_variables(t.vars)
            missing = t.message.missing_variables(t.vars)
            if missing:
                raise MessageError(f"vars: no value for placeholder(s) {', '.join(sorted(missing))}", field="vars")
            if t.vars or t.message.placeholders():
                t.message.render(t.vars)
        except MessageError as exc:
            raise _prefixed(exc, "message") from None
        return 1

    def _check_campaign(self, c: CampaignTemplate) -> int:
        try:
            check_text(c.name, "name")
            return self.campaigns.check(
                message=c.message,
                recipients=[r.model_dump(exclude_none=True) for r in c.recipients],
                account=c.account,
                accounts=c.accounts,
                audience=c.audience,
            )
        except MessageError as exc:
            raise _prefixed(exc, "campaign") from None

    def create(self, spec: ScheduleSpec, created_by: str = "", creator_key: str = "") -> dict[str, Any]:
        """Validate the template and its fan-out against the store and settings now, then persist.
        ``created_by``: the key that made it, whose revocation pauses it (:meth:`pause_created_by`);
        ``creator_key`` its SHA-256 ('' for the bootstrap token), checked after the write: a schedule
        stored while its key was being revoked (or replaced by a new key of the same name) is paused and
        flagged as the revocation would have (attack round 5)."""
        size = self.check(spec)
        schedule_id = "s" + uuid.uuid4().hex[:12]
        now = time.time()
        upcoming = next_fire(spec.cron, spec.timezone, now)
        pipe = self.redis.pipeline()
        pipe.hset(
            self.keys.schedule(schedule_id),
            mapping={
                "spec": spec.model_dump_json(),
                "created": f"{now:.3f}",
                "next_at": f"{upcoming:.3f}",
                "fires": 0,
                "size": size,
                "created_by": created_by,
                "creator_key": creator_key,
            },
        )
        pipe.zadd(self.keys.schedules, {schedule_id: upcoming})
        pipe.execute()
        # after the write: a revocation before this read is seen here, one after it finds the schedule stored
        if created_by and creator_key and self.redis.hget(self.keys.operator_key(created_by), "digest") != creator_key:
            self.pause(schedule_id, owner_revoked=True)
        return self.get(schedule_id) or {}

    def get(self, schedule_id: str) -> dict[str, Any] | None:
        data = cast(dict[str, str], self.redis.hgetall(self.keys.schedule(schedule_id)))
        if not data:
            return None
        spec = json.loads(data["spec"])
        return {
            "id": schedule_id,
            "name": spec.get("name", ""),
            "cron": spec["cron"],
            "timezone": spec["timezone"],
            "kind": "message" if spec.get("message") else "campaign",
            "template": spec.get("message") or spec.get("campaign"),
            "created": float(data["created"]),
            "created_by": data.get("created_by") or None,
            "paused": data.get("paused") == "1",
            "owner_revoked": data.get("owner_revoked") == "1",
            "next_at": float(data["next_at"]) if data.get("next_at") and data.get("paused") != "1" else None,
            "fires": int(data.get("fires", 0)),
            "last_fired": float(data["last_fired"]) if data.get("last_fired") else None,
            "last_result": data.get("last_result"),
            "last_error": data.get("last_error"),
        }

    def all(self) -> list[dict[str, Any]]:
        ids = cast(list[str], self.redis.zrange(self.keys.schedules, 0, -1))
        return [s for s in (self.get(i) for i in ids) if s is not None]

    def pause(self, schedule_id: str, *, owner_revoked: bool = False) -> dict[str, Any] | None:
        """Stop firing, keep the schedule: flagged ``paused`` and scored +inf (never due). The dispatcher
        also reads the flag, so a firing under way when it is set is the last one. ``owner_revoked``: paused
        because its creator's key was revoked (resuming it then needs an admin), in the same transaction."""
        key = self.keys.schedule(schedule_id)
        if not self.redis.exists(key):
            return None
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={"paused": "1", **({"owner_revoked": "1"} if owner_revoked else {})})
        pipe.zadd(self.keys.schedules, {schedule_id: float("inf")})
        pipe.execute()
        return self.get(schedule_id)

    def pause_created_by(self, key_name: str) -> list[str]:
        """Pause every schedule the key ``key_name`` created and flag it ``owner_revoked`` (it was revoked:
        nobody answers for what it would go on sending, so only an admin resumes it), one already paused
        too, or any operator could resume it in the revoked key's name; the ids."""
        paused = []
        for schedule in self.all():
            mine = schedule["created_by"] == key_name and not schedule["owner_revoked"]
            if mine and self.pause(schedule["id"], owner_revoked=True):
                paused.append(schedule["id"])
        return paused

    def resume(self, schedule_id: str, now: float | None = None, *, admin: bool = True) -> dict[str, Any] | None:
        """Fire again from the next cron time after now (times missed while paused are skipped). One paused
        because its key was revoked resumes only for an ``admin`` (:class:`OwnerRevoked`), checked in the
        same transaction as the resume: a revocation landing meanwhile is never undone by an operator."""
        key = self.keys.schedule(schedule_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw, revoked = cast(list[str | None], pipe.hmget(key, ["spec", "owner_revoked"]))
                    if raw is None:
                        return None
                    if revoked == "1" and not admin:
                        raise OwnerRevoked(schedule_id)
                    spec = ScheduleSpec.model_validate_json(raw)
                    upcoming = next_fire(spec.cron, spec.timezone, now or time.time())
                    pipe.multi()
                    pipe.hdel(key, "paused", "owner_revoked")
                    pipe.hset(key, "next_at", f"{upcoming:.3f}")
                    pipe.zadd(self.keys.schedules, {schedule_id: upcoming})
                    pipe.execute()
                    break
                except WatchError:  # changed meanwhile (a revocation, a pause): read it again
                    continue
        return self.get(schedule_id)

    def delete(self, schedule_id: str) -> bool:
        pipe = self.redis.pipeline()
        pipe.zrem(self.keys.schedules, schedule_id)
        pipe.delete(self.keys.schedule(schedule_id))
        removed, _ = pipe.execute()
        return bool(removed)

    def fire_due(self, now: float, on_fire: Any = None) -> int:
        """Fire every due schedule once (dispatcher leader only). ``on_fire(id, fire_at, result)``."""
        due = cast(list[tuple[str, float]], self.redis.zrangebyscore(self.keys.schedules, "-inf", now, withscores=True))
        fired = 0
        for schedule_id, fire_at in due:
            raw, paused, owner, owner_key = cast(
                list[str | None],
                self.redis.hmget(self.keys.schedule(schedule_id), ["spec", "paused", "created_by", "creator_key"]),
            )
            if raw is None:
                self.redis.zrem(self.keys.schedules, schedule_id)
                continue
            if paused == "1":  # paused while this firing was being read: it waits, scored +inf
                self.redis.zadd(self.keys.schedules, {schedule_id: float("inf")})
                continue
            try:
                spec = ScheduleSpec.model_validate_json(raw)
                upcoming = next_fire(spec.cron, spec.timezone, max(now, fire_at))
            except Exception as exc:  # noqa: BLE001 - a broken record must not stop the dispatcher
                self.redis.zrem(self.keys.schedules, schedule_id)
                self.redis.hset(self.keys.schedule(schedule_id), "last_error", f"disabled: {exc}")
                continue
            # move the schedule forward first: a crash below skips one firing at most, never repeats one. What it
            # creates carries the schedule's key (created_by): revoking that key pauses it too
            self.redis.zadd(self.keys.schedules, {schedule_id: upcoming})
            key = f"schedule:{schedule_id}:{int(fire_at)}"
            result: dict[str, Any]
            try:
                self._within_bounds(schedule_id, spec, fire_at)
                if spec.message is not None:
                    t = spec.message
                    submitted = self.producer.submit_message(
                        account=t.account, to=t.to, message=t.message, variables=t.vars,
                        idempotency_key=key, priority=t.priority, created_by=owner or None,
                        creator_key=owner_key or "",
                    )  # fmt: skip
                    result = {"message": submitted.id, "created": submitted.created}
                else:
                    assert spec.campaign is not None
                    c = spec.campaign
                    created = self.campaigns.create(
                        name=f"{c.name} @ {datetime.fromtimestamp(fire_at, ZoneInfo(spec.timezone)):%Y-%m-%d %H:%M:%S}",
                        message=c.message,
                        recipients=(r.model_dump(exclude_none=True) for r in c.recipients),
                        account=c.account, accounts=c.accounts, idempotency_key=key, priority=c.priority,
                        audience=c.audience, created_by=owner or None, creator_key=owner_key or "",
                    )  # fmt: skip
                    result = {"campaign": created.id, "created": created.created, "total": created.total}
                error = ""
            except Exception as exc:  # noqa: BLE001 - a broken template must not stop the dispatcher
                # our errors name fields, never values; anything else may quote the message: type only
                detail = f": {exc}" if isinstance(exc, BroadcastError) else ""
                result, error = {}, f"{type(exc).__name__}{detail}"
            if result.get("created"):
                self._count_jobs(schedule_id, spec, fire_at, jobs=cast(int | None, result.get("total")))
            mapping: dict[str, str] = {
                "next_at": f"{upcoming:.3f}",
                "last_fired": f"{fire_at:.3f}",
                "last_result": json.dumps(result),
                "last_error": error,
            }
            pipe = self.redis.pipeline()
            pipe.hset(self.keys.schedule(schedule_id), mapping=mapping)  # type: ignore[arg-type]
            pipe.hincrby(self.keys.schedule(schedule_id), "fires", 1)
            pipe.execute()
            fired += 1
            if on_fire is not None:
                on_fire(schedule_id, fire_at, {**result, "error": error})
        return fired

    def _within_bounds(self, schedule_id: str, spec: ScheduleSpec, fire_at: float) -> None:
        """At firing time: not sooner than the minimum interval after the last firing, and not over the
        hourly job cap (settings may have changed since the schedule was created). Raises to skip."""
        data = cast(dict[str, str], self.redis.hgetall(self.keys.schedule(schedule_id)))
        last = float(data.get("last_fired") or 0)
        if last and fire_at - last < self.settings.schedule_min_interval_s:
            raise MessageError(
                f"skipped: {fire_at - last:.0f} s after the last firing (BROADCAST_SCHEDULE_MIN_INTERVAL_S)"
            )
        window, used = _window(data, fire_at)
        if used + _size(spec, data) > self.settings.schedule_max_jobs_per_hour:
            raise MessageError(
                f"skipped: {used} job(s) created since {window:.0f} would pass "
                f"{self.settings.schedule_max_jobs_per_hour} an hour (BROADCAST_SCHEDULE_MAX_JOBS_PER_HOUR)"
            )

    def _count_jobs(self, schedule_id: str, spec: ScheduleSpec, fire_at: float, jobs: int | None = None) -> None:
        data = cast(dict[str, str], self.redis.hgetall(self.keys.schedule(schedule_id)))
        window, used = _window(data, fire_at)
        made = _size(spec, data) if jobs is None else jobs
        self.redis.hset(
            self.keys.schedule(schedule_id),
            mapping={"window_start": f"{window:.3f}", "window_jobs": str(used + made)},
        )


def _window(data: dict[str, str], fire_at: float) -> tuple[float, int]:
    """(start, jobs created) of the schedule's current one-hour accounting window; a new one after an hour."""
    start = float(data.get("window_start") or 0)
    if fire_at - start >= 3600:
        return fire_at, 0
    return start, int(data.get("window_jobs") or 0)


def _size(spec: ScheduleSpec, data: dict[str, str] | None = None) -> int:
    """Jobs one firing creates: an audience's as resolved at creation (it is resolved again at each firing)."""
    if spec.campaign is not None and spec.campaign.audience is not None and data and data.get("size"):
        return int(data["size"])
    return 1 if spec.message is not None else len(spec.campaign.recipients) if spec.campaign else 0


def _prefixed(exc: MessageError, prefix: str) -> MessageError:
    """The same error with its field under the template's part of the schedule (``message.vars``)."""
    field = f"{prefix}.{exc.field}" if exc.field else prefix
    if isinstance(exc, AudienceError):
        return AudienceError(f"{prefix}.{exc}", field=field, status=exc.status, code=exc.code)
    return type(exc)(f"{prefix}.{exc}", field=field)
