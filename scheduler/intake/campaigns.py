"""Campaigns: one message to many recipients, accepted atomically, tracked to the last delivery.

Submission validates every recipient before anything is written (the error names ``recipients[i].field``),
then writes the jobs in pipelined chunks that the dispatcher cannot see (hashes, the campaign's job list,
one staging list per account) and finally makes the whole campaign live in one Lua step
(``worker/store/lua/campaign_commit.lua``), which also claims the idempotency key. A failure before that
step deletes what was written; so a campaign is either wholly stored and queued, or not at all.

Memory stays bounded for 100,000 recipients: recipients are consumed as an iterator and written in
chunks; a pending job is a small hash (state, account, recipient, campaign, vars) plus two list entries.
When the recipients can be read twice (a :class:`Replayable`: an uploaded file, a parsed body), a first
pass validates and counts them all before anything is written, so an over-limit or bad upload leaves
Redis untouched.

Safety (docs/design.md, "Campaign safety"): a *draft* is stored like a scheduled campaign (jobs staged,
invisible to the dispatcher) but is not due until :meth:`Campaigns.start`; a *test send* goes to a few
internal recipients as ordinary single messages marked ``test_of`` (not the campaign's jobs, not in its
counts); *auto-pause* thresholds are stored on the campaign (``ap_*``) and checked where each outcome is
recorded (``worker/store/lua/finish_*.lua``).

Idempotency: the campaign hash keeps a SHA-256 digest of the whole request (name, message, accounts,
``send_at``, priority and every recipient). The same key with the same digest answers the first campaign;
with another digest it is a conflict (409), never a silent replay that drops the new recipients.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import redis

from scheduler.intake.audience import SAMPLE_ROWS, AudienceIn, Resolved, resolve
from scheduler.intake.producer import Producer, UnknownAccountError, validate_recipient
from worker import jsonsafe
from worker.errors import MessageError
from worker.jsonsafe import SMALL_JSON_LIMITS, JsonLimitError
from worker.messages import (
    MESSAGE_ADAPTER,
    AnyMessage,
    SizePlan,
    check_text,
    check_variables,
    parse_message,
)
from worker.settings import Settings
from worker.store import scripts
from worker.store.accounts import AccountStore
from worker.store.contacts import ContactStore
from worker.store.keys import Keys
from worker.store.ledger import (
    IDEMPOTENCY_TTL_S,
    RECALL_OUTCOMES,
    RESULT_FIELDS,
    STATES,
    TERMINAL,
    Job,
    Ledger,
    RecallOutcome,
    new_id,
)
from worker.store.operators import owner_args
from worker.vendors import check_message_for, vendors_without_revoke

CHUNK = 2000
T = TypeVar("T")
#: Most recipients of one test send (internal people, not an audience).
MAX_TEST_RECIPIENTS = 10
#: Test send ids a campaign remembers (its view lists them with their states).
KEEP_TEST_IDS = 50


class Replayable(Generic[T]):
    """Recipients that can be read more than once (each ``iter()`` starts over), so a campaign can be
    validated whole before its first write."""

    def __init__(self, factory: Callable[[], Iterator[T]]) -> None:
        self.factory = factory

    def __iter__(self) -> Iterator[T]:
        return self.factory()


class CampaignNotFound(LookupError):
    """No campaign with that id."""


class CampaignStateError(ValueError):
    """The action does not apply in the campaign's current status (``code`` for the API's answer)."""

    code = "conflict"


class OwnerRevokedError(CampaignStateError):
    """The key that created the campaign was revoked: only an admin resumes or starts it."""

    code = "owner_revoked"


class UntestedCampaignError(CampaignStateError):
    """Starting a campaign this large needs a test send that went out first (``BROADCAST_REQUIRE_TEST_ABOVE``)."""

    code = "test_send_required"


@dataclass(frozen=True, slots=True)
class AutoPause:
    """When a campaign pauses itself; 0 switches a check off. Stored on the campaign (``ap_*``) and applied
    by ``finish_*.lua`` where each delivery's outcome is recorded."""

    #: share of dead deliveries among the last ``window`` final outcomes (sent or dead) ...
    ratio: float
    window: int
    #: ... counted once at least this many outcomes are in the window
    min_attempts: int
    #: or this many dead deliveries in a row
    streak: int

    @classmethod
    def from_settings(cls, settings: Settings) -> AutoPause:
        return cls(
            settings.auto_pause_ratio,
            settings.auto_pause_window,
            settings.auto_pause_min_attempts,
            settings.auto_pause_streak,
        )

    def override(self, given: Mapping[str, Any] | None) -> AutoPause:
        """These defaults with a campaign's own values (a field given as None or 0 switches that check off)."""
        if given is None:
            return self
        unknown = set(given) - {"ratio", "window", "min_attempts", "streak"}
        if unknown:
            name = sorted(unknown)[0]
            raise MessageError(f"auto_pause.{name}: unknown field", field=f"auto_pause.{name}")
        values: dict[str, Any] = {}
        for name, kind, top in (("ratio", float, 1), ("window", int, 10_000), ("min_attempts", int, 10_000),
                                ("streak", int, 10_000)):  # fmt: skip
            if name not in given:
                continue
            raw = given[name]
            if raw is None:
                values[name] = 0
                continue
            ok = not isinstance(raw, bool) and isinstance(raw, int | float) and (kind is float or raw == int(raw))
            if not ok or not 0 <= raw <= top:
                raise MessageError(f"auto_pause.{name}: a number from 0 to {top}", field=f"auto_pause.{name}")
            values[name] = kind(raw)
        return AutoPause(**{**self.fields_as_dict(), **values})

    def fields_as_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "window": self.window, "min_attempts": self.min_attempts, "streak": self.streak}

    def stored(self) -> dict[str, str]:
        """The campaign hash fields ``finish_*.lua`` reads."""
        return {
            "ap_ratio": f"{self.ratio:g}",
            "ap_window": str(self.window),
            "ap_min": str(self.min_attempts),
            "ap_streak": str(self.streak),
        }

    @classmethod
    def from_stored(cls, data: Mapping[str, str]) -> AutoPause:
        return cls(
            float(data.get("ap_ratio") or 0),
            int(data.get("ap_window") or 0),
            int(data.get("ap_min") or 0),
            int(data.get("ap_streak") or 0),
        )


@dataclass(frozen=True, slots=True)
class CampaignCreated:
    """The answer to a campaign submission."""

    id: str
    total: int
    duplicates: int
    status: str
    created: bool
    #: what an audience resolved to (counts, sync ages, first rows); None without an audience
    audience: dict[str, Any] | None = None


def _str_vars(raw: Any, field: str) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise MessageError(f"{field}: must be an object of name -> text", field=field)
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise MessageError(f"{field}: {key!r} is not a valid placeholder name", field=field)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise MessageError(f"{field}.{key}: must be text or a number", field=f"{field}.{key}")
        out[key] = str(value)
    check_variables(out, field)
    return out


def recipients_from_csv(text: Iterable[str]) -> Iterator[dict[str, Any]]:
    """CSV with a ``to`` column, an optional ``account`` column; every other column is a variable."""
    reader = csv.DictReader(text)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise MessageError(f"recipients: not readable as CSV ({exc})", field="recipients") from None
    if fieldnames is None or "to" not in fieldnames:
        raise MessageError("recipients: CSV needs a header row with a 'to' column", field="recipients")
    names = [name.strip() for name in fieldnames if name.strip()]  # unnamed columns (a trailing comma) are ignored
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise MessageError(f"recipients: CSV header: column {repeated[0]!r} appears twice", field="recipients")
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            raise MessageError(f"recipients: CSV line {reader.line_num}: {exc}", field="recipients") from None
        if None in row:  # DictReader files the cells past the header under None
            raise MessageError(
                f"recipients: CSV line {reader.line_num} has more cells than the header has columns", field="recipients"
            )
        to = (row.pop("to") or "").strip()
        account = (row.pop("account", None) or "").strip() or None
        variables = {k: v for k, v in row.items() if k is not None and k.strip() and v is not None}
        yield {"to": to, "account": account, "vars": variables or None}


def recipients_from_jsonl(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """One JSON object per line: ``{"to": …, "account"?: …, "vars"?: {…}}``."""
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        field = f"recipients[{n}]"
        try:
            item = jsonsafe.loads(line, SMALL_JSON_LIMITS, field)  # bounded in shape before it is parsed
        except JsonLimitError:
            raise
        except ValueError:
            raise MessageError(f"{field}: not a JSON object", field=field) from None
        yield item


class Campaigns:
    """Create, observe and steer campaigns."""

    def __init__(
        self,
        ledger: Ledger,
        accounts: AccountStore,
        *,
        max_recipients: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.ledger = ledger
        self.accounts = accounts
        if settings is None:
            from worker.settings import get_settings

            settings = get_settings()
        self.max_recipients = settings.max_campaign_recipients if max_recipients is None else max_recipients
        #: auto-pause thresholds of a campaign that sets none (``BROADCAST_AUTO_PAUSE_*``)
        self.auto_pause = AutoPause.from_settings(settings)
        #: a draft with more recipients needs a test send that went out before it can start (0 = never)
        self.require_test_above = settings.require_test_above
        self.producer = Producer(ledger, accounts)
        self.contacts = ContactStore(ledger.redis, ledger.prefix)
        self.redis: redis.Redis = ledger.redis
        self.keys: Keys = ledger.keys
        self.prefix = ledger.prefix
        self._commit = scripts.register(self.redis, "campaign_commit")
        self._activate_chunk = scripts.register(self.redis, "campaign_activate_chunk")
        self._activate_final = scripts.register(self.redis, "campaign_activate_final")
        self._status = scripts.register(self.redis, "campaign_status")
        self._cancel_chunk = scripts.register(self.redis, "campaign_cancel_chunk")
        self._start = scripts.register(self.redis, "campaign_start")

    # --- create ------------------------------------------------------------------------------------------

    def create(
        self,
        *,
        name: str,
        message: Mapping[str, Any] | AnyMessage,
        recipients: Iterable[Mapping[str, Any]],
        account: str | None = None,
        accounts: list[str] | None = None,
        send_at: float | None = None,
        idempotency_key: str | None = None,
        priority: str = "normal",
        draft: bool = False,
        auto_pause: Mapping[str, Any] | None = None,
        audience: AudienceIn | None = None,
        on_cap: str = "skip",
        created_by: str | None = None,
        creator_key: str = "",
    ) -> CampaignCreated:
        """Validate everything, then store the campaign atomically. Raises MessageError naming the field.
        ``draft``: stored, nothing released until :meth:`start`. ``auto_pause``: this campaign's thresholds
        (missing fields take the settings' defaults; None or 0 switches a check off). ``audience``: recipients
        chosen from the accounts' last contact sync, resolved now, after the given ``recipients``. ``on_cap``:
        what a delivery does when its account's ``recipient_cap`` is reached: ``skip``
        (``skipped``/frequency_cap) or ``wait`` until the window allows. ``created_by``: the key that made it,
        whose revocation pauses it (:meth:`pause_created_by`), ``creator_key`` its SHA-256 ('' for the
        bootstrap token)."""
        if on_cap not in ("skip", "wait"):
            raise MessageError("on_cap: must be 'skip' or 'wait'", field="on_cap")
        parsed = message if not isinstance(message, Mapping) else parse_message(dict(message))
        check_text(name, "name")
        if idempotency_key:
            check_text(idempotency_key, "idempotency_key")
        configured = self.accounts.all()
        known = {a.id for a in configured}
        pool = _pool(account, accounts, known)
        vendors = {a.id: a.spec.vendor for a in configured}
        resolved: Resolved | None = None
        if audience is not None:
            resolved = self.resolve_audience(audience, parsed, pool or None, vendors)
            recipients = _chain(recipients, resolved.rows)
        for acct in sorted({*pool, *(audience.accounts if audience else [])}):
            check_message_for(vendors[acct], parsed)  # vendor rules (E云: a pasted mini-program needs a cover)
        placeholders = parsed.placeholders()
        plan = parsed.size_plan()
        thresholds = self.auto_pause.override(auto_pause)
        header: dict[str, Any] = {
            "name": name,
            "message": parsed.model_dump_json(),
            "account": account,
            "accounts": accounts,
            "send_at": f"{send_at:.3f}" if send_at else None,
            "priority": priority,
        }
        if draft:  # only when set: requests from before drafts existed keep their digest
            header["draft"] = True
        if auto_pause is not None:
            header["auto_pause"] = thresholds.fields_as_dict()
        if audience is not None:
            header["audience"] = audience.model_dump()
        if on_cap != "skip":
            header["on_cap"] = on_cap
        digest = hashlib.sha256(json.dumps(header, sort_keys=True, ensure_ascii=False).encode())

        def validated() -> Iterator[tuple[str, str, str | None]]:
            return self._validate(
                recipients, pool, known, placeholders, plan, parsed, vendors, only_pool=bool(accounts)
            )

        replayable = iter(recipients) is not recipients
        if idempotency_key:
            existing = self.redis.get(self.keys.idempotency("c", idempotency_key))
            if existing:
                _digest_all(digest, validated())
                return self._replayed(str(existing), name, parsed, digest.hexdigest())
        if replayable:  # a first pass validates (and counts) every recipient before anything is written
            if _digest_all(digest, validated()) == 0:
                raise MessageError("recipients: the campaign has no recipients", field="recipients")
            rows = validated()
        else:
            rows = _digesting(digest, validated())
        cid = new_id("c")
        now = time.time()
        scheduled = bool(send_at and send_at > now)
        status = "draft" if draft else "scheduled" if scheduled else "active"
        try:
            # one-shot recipients are validated inside the writes (streamed); a bad one discards what was written
            total, duplicates, used_accounts = self._write(cid, rows, staged=status != "active")
            if total == 0:
                raise MessageError("recipients: the campaign has no recipients", field="recipients")
            if resolved is not None:
                duplicates += resolved.duplicates
            fields: dict[str, str | int] = {
                "name": name,
                "message": parsed.model_dump_json(),
                "kind": parsed.kind,
                "accounts": json.dumps(sorted(used_accounts)),
                "total": total,
                "duplicates": duplicates,
                "created": f"{now:.3f}",
                "send_at": f"{send_at:.3f}" if send_at else "",
                "priority": priority,
                "idempotency_key": idempotency_key or "",
                "digest": digest.hexdigest(),
                **thresholds.stored(),
                "on_cap": on_cap,
                "created_by": created_by or "",
            }
            if resolved is not None and audience is not None:
                fields["audience"] = json.dumps(
                    {"selector": audience.model_dump(), **resolved.summary(sample=0)}, ensure_ascii=False
                )
            self.redis.hset(self.keys.campaign(cid), mapping=fields)  # type: ignore[arg-type]
            created, answered, *committed = self._commit(
                args=[
                    self.prefix,
                    cid,
                    idempotency_key or "",
                    IDEMPOTENCY_TTL_S,
                    f"{now:.6f}",
                    status,
                    f"{send_at:.3f}" if status == "scheduled" and send_at else "",
                    total,
                    *owner_args(created_by, creator_key),
                    *sorted(used_accounts),
                ]
            )
        except BaseException:
            self._discard(cid)
            raise
        if not created:  # a concurrent twin with the same idempotency key won
            self._discard(cid)
            return self._replayed(str(answered), name, parsed, digest.hexdigest())
        status = str(committed[0])  # paused when its key was revoked while it was being written
        shown = None if resolved is None else resolved.summary(sample=SAMPLE_ROWS if draft else 0)
        return CampaignCreated(cid, total, duplicates, status, True, shown)

    def resolve_audience(
        self,
        audience: AudienceIn,
        message: AnyMessage,
        pool: list[str] | None,
        vendors: Mapping[str, str] | None = None,
    ) -> Resolved:
        """An audience's recipients against the last syncs (``pool``: the campaign's own accounts, if given;
        ``vendors``: every configured account's vendor, read here when not given)."""
        if vendors is None:
            vendors = {a.id: a.spec.vendor for a in self.accounts.all()}
        return resolve(
            self.contacts,
            audience,
            placeholders=message.placeholders(),
            allowed_accounts=pool,
            known_accounts=set(vendors),
            vendors=vendors,
        )

    def check(
        self,
        *,
        message: Mapping[str, Any] | AnyMessage,
        recipients: Iterable[Mapping[str, Any]],
        account: str | None = None,
        accounts: list[str] | None = None,
        audience: AudienceIn | None = None,
    ) -> int:
        """Validate a campaign exactly as :meth:`create` would, storing nothing; returns its recipient count."""
        parsed = message if not isinstance(message, Mapping) else parse_message(dict(message))
        configured = self.accounts.all()
        known = {a.id for a in configured}
        vendors = {a.id: a.spec.vendor for a in configured}
        pool = _pool(account, accounts, known)
        for acct in pool:
            check_message_for(vendors[acct], parsed)
        if audience is not None:
            recipients = _chain(recipients, self.resolve_audience(audience, parsed, pool or None, vendors).rows)
        rows = self._validate(
            recipients,
            pool,
            known,
            parsed.placeholders(),
            parsed.size_plan(),
            parsed,
            vendors,
            only_pool=bool(accounts),
        )
        count = sum(1 for _ in rows)
        if count == 0:
            raise MessageError("recipients: the campaign has no recipients", field="recipients")
        return count

    def _replayed(self, cid: str, name: str, message: AnyMessage, digest: str) -> CampaignCreated:
        """The first answer for a reused idempotency key, if the request is the same campaign (409 if not)."""
        data = cast(dict[str, str], self.redis.hgetall(self.keys.campaign(cid)))
        if data.get("digest"):
            different = data["digest"] != digest
        else:  # stored before request digests: compare what it kept
            different = bool(data) and (data.get("name") != name or data.get("message") != message.model_dump_json())
        if different:
            from scheduler.intake.producer import IdempotencyConflict

            raise IdempotencyConflict(
                "idempotency_key: already used for a different campaign (name, message, accounts, send_at, "
                "priority or recipients differ)",
                field="idempotency_key",
            )
        try:
            status = self.get(cid)["status"]
        except CampaignNotFound:
            status = "expired"
        return CampaignCreated(cid, int(data.get("total", 0)), int(data.get("duplicates", 0)), status, False)

    def _validate(
        self,
        recipients: Iterable[Mapping[str, Any]],
        pool: list[str],
        known: set[str],
        placeholders: set[str],
        plan: SizePlan,
        message: AnyMessage,
        vendors: Mapping[str, str],
        *,
        only_pool: bool = False,
    ) -> Iterator[tuple[str, str, str | None]]:
        """(to, account, vars JSON) per recipient, lazily, in order; the first bad recipient raises. A
        recipient's own account must carry the message's kinds (422 naming the kind and the vendor). With
        ``only_pool`` (the campaign named its ``accounts``) a recipient's own account must be one of them: an
        operator who chose the sending accounts never expects a row to send from another."""
        checked = set(pool)
        for n, item in enumerate(recipients):
            field = f"recipients[{n}]"
            if n >= self.max_recipients:
                raise MessageError(
                    f"recipients: more than {self.max_recipients} recipients (BROADCAST_MAX_CAMPAIGN_RECIPIENTS)",
                    field="recipients",
                )
            if not isinstance(item, Mapping):
                raise MessageError(f"{field}: must be an object with 'to'", field=field)
            unknown_fields = set(item) - {"to", "account", "vars"}
            if unknown_fields:
                name = sorted(unknown_fields)[0]
                raise MessageError(f"{field}.{name}: unknown field", field=f"{field}.{name}")
            to = validate_recipient(item.get("to"), f"{field}.to")
            acct = item.get("account")
            if acct is None:
                if not pool:
                    raise MessageError(
                        f"{field}.account: no account for this recipient and no campaign account",
                        field=f"{field}.account",
                    )
                acct = pool[zlib.crc32(to.encode()) % len(pool)]
            elif not isinstance(acct, str) or acct not in known:
                raise UnknownAccountError(
                    f"{field}.account: no account {acct!r} is configured", field=f"{field}.account"
                )
            elif only_pool and acct not in pool:
                raise MessageError(
                    f"{field}.account: {acct!r} is not one of the campaign's accounts ({', '.join(pool)})",
                    field=f"{field}.account",
                )
            elif acct not in checked:
                try:
                    check_message_for(vendors[acct], message)
                except MessageError as exc:
                    raise MessageError(f"{field}.account ({acct}): {exc}", field=f"{field}.account") from None
                checked.add(acct)
            variables = _str_vars(item.get("vars"), f"{field}.vars")
            missing = placeholders - set(variables or {})
            if missing:
                raise MessageError(
                    f"{field}.vars: no value for placeholder(s) {', '.join(sorted(missing))}", field=f"{field}.vars"
                )
            plan.check(variables, field=f"{field}.vars")
            yield to, acct, json.dumps(variables, ensure_ascii=False) if variables else None

    def _write(
        self, cid: str, validated: Iterable[tuple[str, str, str | None]], *, staged: bool
    ) -> tuple[int, int, set[str]]:
        seen: set[str] = set()
        state = "scheduled" if staged else "queued"
        used: set[str] = set()
        total = duplicates = 0
        pipe = self.redis.pipeline(transaction=False)
        pending = 0
        for to, acct, variables in validated:
            if to in seen:
                duplicates += 1
                continue
            seen.add(to)
            job_id = f"{cid}-{total:x}"
            fields = {"state": state, "account": acct, "to": to, "campaign": cid}
            if variables:
                fields["vars"] = variables
            pipe.hset(self.keys.job(job_id), mapping=fields)  # type: ignore[arg-type]
            pipe.rpush(self.keys.campaign_jobs(cid), job_id)
            pipe.rpush(self.keys.campaign_staging(cid, acct), job_id)
            used.add(acct)
            total += 1
            pending += 1
            if pending >= CHUNK:
                pipe.execute()
                pending = 0
        pipe.execute()
        return total, duplicates, used

    def _discard(self, cid: str) -> None:
        """Delete a campaign that never went live (best effort, chunked)."""
        jobs_key = self.keys.campaign_jobs(cid)
        while True:
            ids = cast(list[str], self.redis.lrange(jobs_key, 0, CHUNK - 1))
            if not ids:
                break
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.delete(self.keys.job(job_id))
            pipe.ltrim(jobs_key, len(ids), -1)
            pipe.execute()
        for key in self.redis.scan_iter(match=self.keys.campaign_staging(cid, "*"), count=1000):
            self.redis.delete(key)
        self.redis.delete(self.keys.campaign(cid), jobs_key)

    # --- draft, test send, start ----------------------------------------------------------------------------

    def send_test(
        self,
        cid: str,
        to: list[str],
        *,
        account: str | None = None,
        variables: Mapping[str, Any] | None = None,
        created_by: str | None = None,
        creator_key: str = "",
    ) -> dict[str, Any]:
        """Send the campaign's message to a few internal recipients as ordinary single messages (high
        priority, marked ``test_of``): rendered with ``variables`` or the first recipient's. They are on
        the books like any message but are not the campaign's jobs and not in its counts; like any message
        they carry the key that asked (``created_by``), whose revocation cancels them until they are sent."""
        data = cast(dict[str, str], self.redis.hgetall(self.keys.campaign(cid)))
        if "status" not in data:
            raise CampaignNotFound(cid)
        if not isinstance(to, list) or not 1 <= len(to) <= MAX_TEST_RECIPIENTS:
            raise MessageError(f"to: between 1 and {MAX_TEST_RECIPIENTS} recipients", field="to")
        recipients = list(dict.fromkeys(validate_recipient(t, f"to[{n}]") for n, t in enumerate(to)))
        first = cast(list[str], self.redis.lrange(self.keys.campaign_jobs(cid), 0, 0))
        first_job = self.ledger.get(first[0]) if first else None
        if account is None:
            if first_job is None:
                raise MessageError("account: the campaign's first recipient is gone; name an account", field="account")
            account = first_job.account
        chosen = _str_vars(variables, "vars") if variables is not None else (first_job.variables if first_job else {})
        message = MESSAGE_ADAPTER.validate_json(data["message"])
        sent = []
        for recipient in recipients:
            submitted = self.producer.submit_message(
                account=account, to=recipient, message=message, variables=chosen or None, priority="high",
                test_of=cid, created_by=created_by, creator_key=creator_key,
            )  # fmt: skip
            sent.append(submitted.id)
        now = time.time()
        pipe = self.redis.pipeline()
        pipe.rpush(self.keys.campaign_tests(cid), *sent)
        pipe.ltrim(self.keys.campaign_tests(cid), -KEEP_TEST_IDS, -1)
        pipe.hincrby(self.keys.campaign(cid), "tests", 1)
        pipe.hset(self.keys.campaign(cid), "test_last", f"{now:.3f}")
        pipe.execute()
        return {"campaign": cid, "account": account, "vars": chosen, "tests": self._test_jobs(sent)}

    def _test_jobs(self, ids: list[str]) -> list[dict[str, Any]]:
        """Each test send's public view, cut to what the campaign's page lists."""
        views = [job.public() for job in self.ledger.get_many(ids) if job is not None]
        return [{name: view[name] for name in TEST_JOB_FIELDS} for view in views]

    def start(self, cid: str, *, admin: bool = True) -> dict[str, Any]:
        """Arm a draft: due at its ``send_at`` (scheduled) or now (live at once). 409 when it is not a draft,
        or when it needs a test send that went out first (``BROADCAST_REQUIRE_TEST_ABOVE``);
        :class:`OwnerRevokedError` when its creating key was revoked and the caller is not an ``admin``."""
        now = time.time()
        answer = str(self._start(args=[self.prefix, cid, f"{now:.6f}", self.require_test_above, int(admin)]))
        if answer == "!missing":
            raise CampaignNotFound(cid)
        if answer == "!owner_revoked":
            raise OwnerRevokedError(f"campaign {cid} was created by a key since revoked: an admin may start it")
        if answer == "!test":
            raise UntestedCampaignError(
                f"campaign {cid} has more than {self.require_test_above} recipients: send a test first and let it "
                "go out (POST /v1/campaigns/{id}/test; BROADCAST_REQUIRE_TEST_ABOVE)"
            )
        if answer.startswith("!"):
            raise CampaignStateError(f"cannot start a campaign that is {answer[1:]}: only a draft can be started")
        if answer == "now":
            self._activate(cid, now)
        return self.get(cid)

    # --- read ----------------------------------------------------------------------------------------------

    def get(self, cid: str) -> dict[str, Any]:
        """The campaign with its per-state counts; ``status`` is ``finished`` once every job is terminal."""
        data = cast(dict[str, str], self.redis.hgetall(self.keys.campaign(cid)))
        if "status" not in data:  # absent, or a creation that was never committed
            raise CampaignNotFound(cid)
        counts = {state: max(0, int(data.get(f"n:{state}", 0))) for state in STATES}
        total = int(data.get("total", 0))
        terminal = sum(counts[s] for s in TERMINAL)
        status = data["status"]
        finished = terminal >= total
        if finished and status in ("active", "scheduled", "paused"):
            status = "finished"
        elif finished and status == "cancelled":
            status = "cancelled"
        return {
            "id": cid,
            "name": data.get("name", ""),
            "status": status,
            "finished": finished,
            "total": total,
            "duplicates": int(data.get("duplicates", 0)),
            "counts": counts,
            "accounts": json.loads(data.get("accounts") or "[]"),
            "created": float(data.get("created") or 0),
            "send_at": float(data["send_at"]) if data.get("send_at") else None,
            "priority": data.get("priority", "normal"),
            "message": json.loads(data.get("message") or "{}"),
            "pause_reason": data.get("pause_reason") or None,
            "auto_pause": AutoPause.from_stored(data).fields_as_dict(),
            "on_cap": data.get("on_cap") or "skip",
            "tests": self._tests_view(cid, data),
            "recall": recall_progress(data),
            "audience": json.loads(data["audience"]) if data.get("audience") else None,
            "created_by": data.get("created_by") or None,
            "owner_revoked": data.get("owner_revoked") == "1",
        }

    def _tests_view(self, cid: str, data: Mapping[str, str]) -> dict[str, Any]:
        """How many test sends were asked and went out, the last one's time, and the remembered ones."""
        asked = int(data.get("tests") or 0)
        ids = cast(list[str], self.redis.lrange(self.keys.campaign_tests(cid), 0, -1)) if asked else []
        return {
            "count": asked,
            "sent": int(data.get("tests_sent") or 0),
            "last_at": float(data["test_last"]) if data.get("test_last") else None,
            "jobs": self._test_jobs(ids),
        }

    def created_at(self, cid: str) -> float | None:
        """When the campaign was stored (its jobs carry no time of their own), or None."""
        raw = self.redis.hget(self.keys.campaign(cid), "created")
        return float(cast(str, raw)) if raw else None

    def recent(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Newest campaigns first (without their message template)."""
        ids = cast(list[str], self.redis.zrevrange(self.keys.campaigns, offset, offset + limit - 1))
        out = []
        for cid in ids:
            try:
                item = self.get(cid)
            except CampaignNotFound:
                continue
            item.pop("message", None)
            out.append(item)
        return out

    def deliveries(
        self, cid: str, *, status: str | None = None, cursor: int = 0, limit: int = 100
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of per-recipient results in recipient order; returns (items, next cursor or None)."""
        self.get(cid)
        key = self.keys.campaign_jobs(cid)
        items: list[dict[str, Any]] = []
        position = cursor
        page = max(limit, 200) if status else limit
        while len(items) < limit:
            ids = cast(list[str], self.redis.lrange(key, position, position + page - 1))
            if not ids:
                return items, None
            for offset, job in enumerate(self.ledger.get_many(ids)):
                if job is None or (status and job.state != status):
                    continue
                items.append(delivery(job))
                if len(items) >= limit:
                    next_cursor = position + offset + 1
                    more = self.redis.llen(key) > next_cursor
                    return items, next_cursor if more else None
            position += len(ids)
        return items, position

    def _accounts_of(self, cid: str) -> list[str]:
        return list(json.loads(cast(str, self.redis.hget(self.keys.campaign(cid), "accounts")) or "[]"))

    def set_status(self, cid: str, action: str, *, admin: bool = True) -> dict[str, Any]:
        """pause | resume | cancel. Cancel stops every unsent job at once and marks them cancelled. A
        campaign whose creating key was revoked resumes only for an ``admin`` (:class:`OwnerRevokedError`)."""
        accounts = self._accounts_of(cid)
        script_action = "resume_admin" if action == "resume" and admin else action
        if action == "cancel" and self.get(cid)["finished"]:
            raise CampaignStateError("cannot cancel a campaign that has finished: every job is already terminal")
        # a finished campaign is still stored "active": pausing it would answer 200 and change nothing
        finished = action in ("pause", "resume") and self.get(cid)["finished"]
        previous = (
            "!"
            if finished
            else str(self._status(args=[self.prefix, cid, script_action, f"{time.time():.6f}", *accounts]))
        )
        if previous == "!missing":
            raise CampaignNotFound(cid)
        if previous == "!owner_revoked":
            raise OwnerRevokedError(f"campaign {cid} was created by a key since revoked: an admin may resume it")
        if previous.startswith("!"):
            # named as the campaign is shown, and a recall said, since that is why most such campaigns
            # cannot go on
            shown = self.get(cid)
            state = str(shown["status"]) + (" and recalled" if shown.get("recall") else "")
            raise CampaignStateError(f"cannot {action} a campaign that is {state}")
        if action == "cancel":
            self._cancel_jobs(cid, accounts)
        return self.get(cid)

    def pause_created_by(self, key_name: str) -> tuple[list[str], list[str]]:
        """Pause every unfinished campaign the key ``key_name`` created and flag it ``owner_revoked`` (it was
        revoked: nobody answers any more for what it would still send, a future-dated one included), a draft
        or a paused one flagged only, so that only an admin starts or resumes it; (the paused ids, the
        drafts' ids)."""
        ids = cast(list[str], self.redis.zrange(self.keys.campaigns, 0, -1))
        paused: list[str] = []
        drafts: list[str] = []
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            pipe = self.redis.pipeline(transaction=False)
            for cid in chunk:
                pipe.hmget(self.keys.campaign(cid), "created_by", "owner_revoked")
            for cid, (by, revoked) in zip(chunk, pipe.execute(), strict=True):
                if by != key_name or revoked == "1":
                    continue
                try:
                    if self.get(cid)["finished"]:
                        continue
                except CampaignNotFound:
                    continue
                now = f"{time.time():.6f}"
                previous = str(self._status(args=[self.prefix, cid, "owner_revoked", now, *self._accounts_of(cid)]))
                if previous == "draft":
                    drafts.append(cid)
                elif not previous.startswith("!"):
                    paused.append(cid)
        return paused, drafts

    def recall(self, cid: str, *, window_s: float) -> dict[str, Any]:
        """Stop the campaign (a cancel, unless it has finished) and ask for the revoke of every message it
        sent, each exactly once: those still inside the window get a revoke job ahead of their account's
        sends. The first request's window holds; a second request only completes what the first began
        (nothing is revoked twice). A send in flight meanwhile asks for its revoke when it finishes."""
        current = self.get(cid)
        ck = self.keys.campaign(cid)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(ck, "recall_window", f"{window_s:g}")
        pipe.hsetnx(ck, "recall_unsupported", ",".join(vendors_without_revoke()))
        pipe.hsetnx(ck, "recall_requested_at", f"{time.time():.6f}")
        pipe.hmget(ck, "recall_window", "recall_unsupported")
        *_, (window, unsupported) = pipe.execute()
        if current["status"] not in ("cancelled", "finished"):
            # it may finish (or be cancelled) meanwhile: then nothing is left to stop
            with contextlib.suppress(CampaignStateError):
                self.set_status(cid, "cancel")
        key = self.keys.campaign_jobs(cid)
        total = int(self.redis.llen(key))
        vendors = [v for v in (unsupported or "").split(",") if v]
        for start in range(0, total, CHUNK):
            ids = cast(list[str], self.redis.lrange(key, start, start + CHUNK - 1))
            self.ledger.request_revokes(ids, window_s=float(window), unsupported=vendors)
        return self.get(cid)

    def _in_slices(self, cid: str, script: Any, size: int = 5000) -> int:
        """Run a per-slice script over a campaign's job list: no single Lua call blocks Redis for long."""
        total = int(self.redis.llen(self.keys.campaign_jobs(cid)))
        changed = 0
        for start in range(0, total, size):
            changed += int(script(args=[self.prefix, cid, f"{time.time():.6f}", start, start + size - 1]))
        return changed

    def _cancel_jobs(self, cid: str, accounts: list[str]) -> int:
        cancelled = self._in_slices(cid, self._cancel_chunk)
        pipe = self.redis.pipeline(transaction=False)
        for acct in accounts:
            pipe.delete(self.keys.campaign_queue(cid, acct), self.keys.campaign_staging(cid, acct))
        pipe.execute()
        return cancelled

    def expire_finished(self, *, older_than_s: float, now: float | None = None, limit: int = 100) -> int:
        """Delete finished campaigns created more than ``older_than_s`` ago (their jobs expire on their own
        after the same retention). Unfinished campaigns are kept whatever their age."""
        now = now or time.time()
        old = cast(
            list[str], self.redis.zrangebyscore(self.keys.campaigns, "-inf", now - older_than_s, start=0, num=limit)
        )
        removed = 0
        for cid in old:
            try:
                finished = self.get(cid)["finished"]
            except CampaignNotFound:
                finished = True
            if not finished:
                continue
            accounts = self._accounts_of(cid)
            pipe = self.redis.pipeline()
            pipe.delete(
                self.keys.campaign(cid),
                self.keys.campaign_jobs(cid),
                self.keys.campaign_outcomes(cid),
                self.keys.campaign_tests(cid),
            )
            for acct in accounts:
                pipe.delete(self.keys.campaign_queue(cid, acct), self.keys.campaign_staging(cid, acct))
            pipe.zrem(self.keys.campaigns, cid)
            pipe.execute()
            removed += 1
        return removed

    def activate_due(self, now: float | None = None) -> int:
        """Start scheduled campaigns whose time has come (called by the dispatcher)."""
        now = now or time.time()
        due = cast(list[str], self.redis.zrangebyscore(self.keys.due_campaigns, "-inf", now, start=0, num=10))
        for cid in due:
            if self.redis.hget(self.keys.campaign(cid), "status") != "scheduled":
                self._activate_final(args=[self.prefix, cid, f"{now:.6f}"])  # drops it from the due set
                continue
            self._activate(cid, now)
        return len(due)

    def _activate(self, cid: str, now: float) -> None:
        """A scheduled campaign's staged jobs become queued, then its staging lists become live sources."""
        self._in_slices(cid, self._activate_chunk)
        self._activate_final(args=[self.prefix, cid, f"{now:.6f}", *self._accounts_of(cid)])


def _chain(first: Iterable[Mapping[str, Any]], then: list[dict[str, Any]]) -> Iterable[Mapping[str, Any]]:
    """Given recipients, then an audience's: replayable when the given ones are."""
    if iter(first) is first:  # one-shot: read once, in order

        def once() -> Iterator[Mapping[str, Any]]:
            yield from first
            yield from then

        return once()
    return Replayable(lambda: itertools.chain(first, then))


def _pool(account: str | None, accounts: list[str] | None, known: set[str]) -> list[str]:
    """The campaign's accounts for recipients without one; each must be configured."""
    pool = list(accounts or ([account] if account else []))
    for n, acct in enumerate(pool):
        field = "account" if account and not accounts else f"accounts[{n}]"
        check_text(acct, field)
        if acct not in known:
            raise UnknownAccountError(f"{field}: no account {acct!r} is configured", field=field)
    return pool


def _digesting(digest: Any, rows: Iterator[tuple[str, str, str | None]]) -> Iterator[tuple[str, str, str | None]]:
    """Pass validated rows through, adding each to the request digest."""
    for row in rows:
        digest.update(json.dumps(row, ensure_ascii=False).encode() + b"\n")
        yield row


def _digest_all(digest: Any, rows: Iterator[tuple[str, str, str | None]]) -> int:
    """Validate and digest every row without storing anything; returns how many there were."""
    count = 0
    for _ in _digesting(digest, rows):
        count += 1
    return count


#: A delivery's fields, in order (``result`` holds the vendor ids; exports spread it into columns; ``parts``
#: is a sequence's parts, each with its own status and ids, None for other messages).
DELIVERY_FIELDS = (
    "id", "to", "account", "status", "attempts", "result", "vendor", "sent_at", "reason", "skip_reason", "error", "recall",
    "recall_error", "parts",
)  # fmt: skip
#: A sequence's columns in an export: one row per part, numbered from 1, with that part's own ids.
PART_COLUMNS = ("part", "part_kind", "part_status")
#: The flat columns of a delivery (CSV): ``result`` spread into the vendor ids, ``parts`` into a row per part.
DELIVERY_COLUMNS = [
    column
    for name in DELIVERY_FIELDS
    for column in (RESULT_FIELDS if name == "result" else PART_COLUMNS if name == "parts" else (name,))
]


def recall_progress(data: Mapping[str, str]) -> dict[str, Any] | None:
    """A campaign's recall so far (None when never recalled): how many revokes were asked for, each
    outcome, and how many are still pending (a send in flight at the recall is not counted yet)."""
    if "recall_requested_at" not in data:
        return None
    requested = max(0, int(data.get("rc:requested", 0)))
    outcomes = {outcome: max(0, int(data.get(f"rc:{outcome}", 0))) for outcome in RECALL_OUTCOMES}
    return {
        "requested": requested,
        **outcomes,
        RecallOutcome.PENDING.value: max(0, requested - sum(outcomes.values())),
        "window_s": float(data.get("recall_window") or 0),
        "requested_at": float(data["recall_requested_at"]),
    }


#: What a campaign lists of each of its test sends (a projection of :meth:`Job.public`).
TEST_JOB_FIELDS = ("id", "to", "account", "status")


def delivery(job: Job) -> dict[str, Any]:
    """One recipient's outcome: the job's public view, cut to the delivery columns."""
    view = job.public()
    return {name: view[name] for name in DELIVERY_FIELDS}
