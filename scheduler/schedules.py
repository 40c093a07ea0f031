"""Recurring schedules: a cron expression, a timezone and a message or campaign template.

One source of truth, in Redis: a hash per schedule and one sorted set of next fire times, read only by
the dispatcher leader (so a schedule fires once even with a hot standby). When a schedule is due the
dispatcher moves its next fire time forward and submits the message or campaign with the idempotency key
``schedule:{id}:{fire time}`` — a repeated fire (crash, failover) creates nothing twice — then publishes a
``broadcast.schedule_fired`` task so each firing shows in Flower.

Cron: five fields (minute hour day month weekday), or six with seconds last (``* * * * * */10``),
evaluated in the schedule's timezone (croniter).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import redis
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler.campaigns import Campaigns
from scheduler.producer import Producer
from worker.keys import Keys
from worker.messages import Message


class MessageTemplate(BaseModel):
    """What a schedule sends each time: one message."""

    model_config = ConfigDict(extra="forbid")
    account: str = Field(min_length=1, max_length=64)
    to: str = Field(min_length=1, max_length=128)
    message: Message
    vars: dict[str, str] | None = None
    priority: str = Field(default="normal", pattern="^(normal|high)$")


class RecipientTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=128)
    account: str | None = None
    vars: dict[str, str] | None = None


class CampaignTemplate(BaseModel):
    """What a schedule sends each time: a campaign."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    account: str | None = None
    accounts: list[str] | None = None
    recipients: list[RecipientTemplate] = Field(min_length=1, max_length=100_000)
    message: Message
    priority: str = Field(default="normal", pattern="^(normal|high)$")


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
        return value

    @model_validator(mode="after")
    def _fires_some_day(self) -> ScheduleSpec:
        try:
            next_fire(self.cron, self.timezone, time.time())
        except Exception:  # noqa: BLE001 - croniter raises several types for dates that never come
            raise ValueError(f"cron {self.cron!r} never fires") from None
        return self

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _one_template(self) -> ScheduleSpec:
        if (self.message is None) == (self.campaign is None):
            raise ValueError("give exactly one of message or campaign")
        return self


def next_fire(cron: str, timezone: str, after: float) -> float:
    """The first fire time strictly after ``after`` (epoch seconds)."""
    start = datetime.fromtimestamp(after, ZoneInfo(timezone))
    return float(croniter(cron, start).get_next(float))


class Schedules:
    """CRUD for schedules and the dispatcher's firing step."""

    def __init__(self, client: redis.Redis, prefix: str, producer: Producer, campaigns: Campaigns) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.producer = producer
        self.campaigns = campaigns

    def create(self, spec: ScheduleSpec) -> dict[str, Any]:
        """Validate the template against the store now (accounts exist), then persist."""
        if spec.message is not None and self.producer.accounts.get(spec.message.account) is None:
            from scheduler.producer import UnknownAccountError

            raise UnknownAccountError(
                f"message.account: no account {spec.message.account!r} is configured", field="message.account"
            )
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
            },
        )
        pipe.zadd(self.keys.schedules, {schedule_id: upcoming})
        pipe.execute()
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
            "paused": data.get("paused") == "1",
            "next_at": float(data["next_at"]) if data.get("next_at") and data.get("paused") != "1" else None,
            "fires": int(data.get("fires", 0)),
            "last_fired": float(data["last_fired"]) if data.get("last_fired") else None,
            "last_result": data.get("last_result"),
            "last_error": data.get("last_error"),
        }

    def all(self) -> list[dict[str, Any]]:
        ids = cast(list[str], self.redis.zrange(self.keys.schedules, 0, -1))
        return [s for s in (self.get(i) for i in ids) if s is not None]

    def pause(self, schedule_id: str) -> dict[str, Any] | None:
        """Stop firing, keep the schedule: flagged ``paused`` and scored +inf (never due). The dispatcher
        also reads the flag, so a firing under way when it is set is the last one."""
        key = self.keys.schedule(schedule_id)
        if not self.redis.exists(key):
            return None
        pipe = self.redis.pipeline()
        pipe.hset(key, "paused", "1")
        pipe.zadd(self.keys.schedules, {schedule_id: float("inf")})
        pipe.execute()
        return self.get(schedule_id)

    def resume(self, schedule_id: str, now: float | None = None) -> dict[str, Any] | None:
        """Fire again from the next cron time after now (times missed while paused are skipped)."""
        key = self.keys.schedule(schedule_id)
        raw = cast(str | None, self.redis.hget(key, "spec"))
        if raw is None:
            return None
        spec = ScheduleSpec.model_validate_json(raw)
        upcoming = next_fire(spec.cron, spec.timezone, now or time.time())
        pipe = self.redis.pipeline()
        pipe.hdel(key, "paused")
        pipe.hset(key, "next_at", f"{upcoming:.3f}")
        pipe.zadd(self.keys.schedules, {schedule_id: upcoming})
        pipe.execute()
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
            raw, paused = cast(list[str | None], self.redis.hmget(self.keys.schedule(schedule_id), ["spec", "paused"]))
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
            # move the schedule forward first: a crash below skips one firing at most, never repeats one
            self.redis.zadd(self.keys.schedules, {schedule_id: upcoming})
            key = f"schedule:{schedule_id}:{int(fire_at)}"
            result: dict[str, Any]
            try:
                if spec.message is not None:
                    t = spec.message
                    submitted = self.producer.submit_message(
                        account=t.account, to=t.to, message=t.message, variables=t.vars,
                        idempotency_key=key, priority=t.priority,
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
                    )  # fmt: skip
                    result = {"campaign": created.id, "created": created.created}
                error = ""
            except Exception as exc:  # noqa: BLE001 - a broken template must not stop the dispatcher
                result, error = {}, f"{type(exc).__name__}: {exc}"
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
