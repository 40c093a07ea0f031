"""One typed settings object, read from ``BROADCAST_*`` environment variables.

Every default is documented beside its field. Tests and ``broadcast dev`` change behaviour only through
these variables, so a worker subprocess sees exactly what its parent configured.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration. Secrets are SecretStr so they never print."""

    model_config = SettingsConfigDict(env_prefix="BROADCAST_", extra="ignore", env_ignore_empty=True)

    #: Broker and state store. ``broadcast dev`` starts a private Redis when this is unset. Three forms
    #: (worker/runtime/connections.py builds every client from them): ``redis://[user:password@]host:port/db``,
    #: ``rediss://…`` (TLS, for managed Redis; ``redis_ca_file``), and Sentinel in kombu's convention,
    #: ``sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379`` with ``redis_master_name`` (the
    #: password in the first URL, if any, is the primary's; ``redis_sentinel_password`` the Sentinels').
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: The Sentinel service name of the primary (required with ``sentinel://``).
    redis_master_name: str = ""
    #: Password of the Sentinels themselves (``requirepass`` in sentinel.conf), when they have one.
    redis_sentinel_password: SecretStr = SecretStr("")
    #: CA bundle that signs the server's certificate for ``rediss://`` (default: the system's CAs).
    redis_ca_file: Path | None = None
    #: Replicas that must hold a job's ``sending`` mark before its vendor call, and its outcome after
    #: (``WAIT``): unset = every replica the primary has shown in sync since the process started (0 without
    #: replicas; sending waits while one is missing, e.g. after a failover). See docs/deployment.md.
    replica_acks: int | None = Field(default=None, ge=0, le=10)
    #: How long BEGIN and FINISH wait for those replicas (below the Redis socket timeout, 5 s). Not acknowledged
    #: in time: the vendor is not called and the job goes back (BEGIN), or the session stops and an
    #: unconfirmed outcome is left to recovery, never resent (FINISH).
    replica_ack_timeout_s: float = Field(default=1.0, gt=0, le=4)
    #: Prefix of every Redis key and of the Celery queue, so several deployments (or tests) share a Redis.
    key_prefix: str = Field(default="bc", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    #: ``dev`` allows the API to start without API tokens; ``prod`` refuses.
    env: Literal["dev", "prod"] = "prod"
    #: Bearer tokens accepted by ``/v1`` (comma-separated: several keys allow rotation).
    api_token: SecretStr = SecretStr("")
    #: Fernet keys that encrypt vendor tokens in Redis (comma-separated: the first encrypts, all decrypt, for
    #: rotation; docs/deployment.md). Unset: tokens are stored as given. ``broadcast dev`` makes one per run.
    secret_key: SecretStr = SecretStr("")
    #: ``/metrics`` answers without a token only when true: it lists account ids and their volumes.
    metrics_public: bool = False
    #: Requests a minute an operator key (``/v1/keys``) may make unless created with its own rate (0 = no
    #: limit). ``BROADCAST_API_TOKEN`` is not limited.
    key_rate_per_min: int = Field(default=600, ge=0)
    #: The audit trail (``GET /v1/audit``) keeps entries this long (trimmed as new ones are written).
    audit_retention_days: float = Field(default=90.0, gt=0)
    #: TOML file of sending accounts loaded at start (``[[accounts]]`` tables).
    accounts_file: Path | None = None

    # --- vendor HTTP ---------------------------------------------------------------------------------
    #: Addresses vendor calls may not reach (comma-separated CIDR ranges): ``auto`` is loopback, link-local
    #: (cloud metadata at 169.254.169.254) and "this host" in ``prod``, nothing in ``dev``; ``none`` is nothing.
    #: Checked on every address a vendor's host resolves to (decimal and hex IP forms too), at each connect.
    vendor_deny: str = "auto"
    #: Ranges exempt from ``vendor_deny`` (a self-hosted vendor gateway on this host: ``127.0.0.1/32``).
    vendor_allow: str = ""
    #: Vendor clients use 15-60 s; GeWe fetches media by URL itself, so sends can be slow. Each httpx
    #: timeout bounds one operation (one read), so a vendor that dribbles its answer byte by byte never
    #: trips it: ``vendor_deadline_s`` bounds the whole call.
    vendor_read_timeout_s: float = 30.0
    vendor_connect_timeout_s: float = 5.0
    vendor_write_timeout_s: float = 10.0
    #: Waiting for a free connection of this process's pool (before anything is sent).
    vendor_pool_timeout_s: float = 5.0
    #: A pooled connection idle longer than this is closed, never reused for a send. Servers close idle
    #: connections after their own timeout (uvicorn, Node.js, Apache: 5 s); one that closes just as a
    #: request goes out leaves it an unknown outcome, so the pool gives connections up well before. 0: a
    #: fresh connection for every call.
    vendor_keepalive_s: float = Field(default=2.0, ge=0.0)
    #: One overall deadline per vendor call, from the start of the request to the last byte of the answer.
    #: A call past it is an unknown outcome (the request may have reached the vendor), never resent.
    vendor_deadline_s: float = 45.0
    #: After a call is abandoned without an answer (read timeout, or its deadline), the account waits this
    #: long before its next send, shown as the hold ``cooldown`` on the account: the vendor may still be
    #: working on the abandoned call, and two calls in flight on one WeChat account is what vendors warn
    #: against (GeWe 账号规范之风险: one call at a time per account).
    abandoned_cooldown_s: float = Field(default=30.0, ge=0, le=3600)
    #: Tries (first one included) inside one attempt, for errors where the request provably did not leave.
    quick_retries: int = Field(default=3, ge=1, le=10)
    quick_retry_max_wait_s: float = 2.0

    # --- long retries (re-scheduled through the due set, never by sleeping in a worker) ----------------
    retry_base_s: float = 5.0
    retry_max_s: float = 600.0
    max_attempts_transient: int = 8
    max_attempts_throttled: int = 10
    max_attempts_failure: int = 3
    #: ``dead`` (default): an unknown outcome goes to a person; ``retry`` resends (may double-send).
    ambiguous_policy: Literal["dead", "retry"] = "dead"

    # --- dispatch -----------------------------------------------------------------------------------
    #: Jobs of one account handed to one session (one Celery task). Unpaced accounts send them back to
    #: back; paced ones as their limits allow, while the next start is within ``session_hold_s``.
    batch_size: int = Field(default=50, ge=1, le=1000)
    #: A session stops taking jobs after this long and gives the rest back (other campaigns' turn).
    batch_max_s: float = 20.0
    #: A session waits in its worker thread for the account's next send when it is at most this far off;
    #: further off, it hands the account back to the dispatcher (a sleeping thread is cheap, a claim,
    #: a Celery message and a release per send are not).
    session_hold_s: float = Field(default=5.0, ge=0, le=60)
    #: Sends one worker process holds in flight (threads of ``broadcast worker``'s pool): one per account
    #: being served, waiting for its vendor or for its next pacing slot.
    worker_concurrency: int = Field(default=500, ge=1, le=5000)
    #: Worker processes ``broadcast worker`` starts (0 = one per CPU core; see worker/runtime/launch.py).
    worker_processes: int = Field(default=0, ge=0, le=256)
    #: With several worker processes, each runs on one CPU core of those this command may use (Linux): a
    #: thread handing the interpreter to another then wakes it on the same core, not across cores
    #: (docs/benchmarks.md: up to 27% less worker CPU per send, most where a session sends once).
    #: Off: the kernel places them as it likes.
    worker_pin_cpus: bool = True
    #: A threads-pool worker whose Celery consumer took no message for this long while messages waited and
    #: slots were free starts itself again (worker/runtime/celery_app.py ConsumerWatch; 0 = never).
    consumer_stall_s: float = Field(default=60.0, ge=0, le=3600)
    #: How long an account's in-flight lease lives without a heartbeat. Must outlive one vendor call:
    #: checked at start against ``vendor_deadline_s`` + ``vendor_pool_timeout_s`` + ``lease_margin_s``.
    lease_ttl_s: float = 60.0
    #: Slack between the longest vendor call and the lease (Redis round trips, GC pauses, clock steps).
    lease_margin_s: float = 5.0
    #: Dispatcher idle poll when nothing wakes it.
    dispatch_idle_s: float = Field(default=0.05, gt=0, le=4)  # a blocking wait, below the Redis socket timeout

    # --- contact sync (one vendor call per step, under the account's lease) ---------------------------
    #: Random gap between two contact calls on one account: E云's docs ask for 300-800 ms between
    #: ``getContact`` calls; GeWe documents none, the same gap is kept.
    contacts_gap_min_s: float = Field(default=0.3, ge=0, le=60)
    contacts_gap_max_s: float = Field(default=0.8, ge=0, le=60)
    #: How long the first list call (GeWe ``fetchContactsList``, slow with many friends) is waited for
    #: before the sync polls the vendor's list cache instead.
    contacts_list_timeout_s: float = Field(default=20.0, gt=0, le=300)
    #: Polls of the list cache (GeWe) or address list (E云) before the sync fails.
    contacts_max_polls: int = Field(default=60, ge=1, le=1000)
    #: Tries of one failed contact call before the sync fails with its reason.
    contacts_max_attempts: int = Field(default=5, ge=1, le=20)

    # --- Celery --------------------------------------------------------------------------------------
    task_soft_time_limit_s: int = 240
    #: Hard limit, below the broker visibility timeout so a stuck task dies before it is redelivered.
    task_time_limit_s: int = 300
    visibility_timeout_s: int = 3600

    #: Testing aid: seconds added to the wall clock for pacing decisions (daily cap days, quiet hours).
    clock_offset_s: float = 0.0

    #: Finished jobs (sent, dead) keep their record and history this long, then expire (0 = forever).
    #: Export campaign deliveries before. 30 days by default.
    retention_days: float = 30.0

    # --- recall (revokes) ------------------------------------------------------------------------------
    #: A message is revoked only this long after the vendor's createTime (our ``sent_at`` when the vendor
    #: gives none): WeChat refuses revokes after 2 minutes, the margin covers clock skew and the queue.
    recall_window_s: float = Field(default=110.0, gt=0, le=120)
    #: How long ``POST /v1/messages/{id}/revoke`` waits for the worker's answer before it answers 202.
    revoke_wait_s: float = Field(default=10.0, ge=0, le=60)

    log_json: bool = False
    log_level: str = "INFO"

    # --- input bounds (API and schedules) ------------------------------------------------------------
    #: Most recipients one campaign may have (JSON body, upload or schedule); more is refused with 422
    #: before anything is written to Redis.
    max_campaign_recipients: int = Field(default=1_000_000, ge=1, le=10_000_000)
    #: Campaign submissions (JSON or upload) one API process works on at once; more answer 503 with
    #: Retry-After, so big uploads cannot take all the API's memory and starve small requests.
    max_concurrent_uploads: int = Field(default=2, ge=1, le=64)
    #: Seconds a request body may take to arrive, from the first read to the last byte; a slower one is
    #: cut with 408 (a client trickling a byte a second must not hold a submission slot for hours).
    body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    #: Seconds a connection has to send a whole request head, from its opening or its last answer; then it
    #: is closed (idle connections must not use up the API's file descriptors; scheduler/api/protocol.py).
    head_timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: Shortest gap between two firings of a schedule; a cron that fires more often is refused (422).
    schedule_min_interval_s: float = Field(default=60.0, ge=0)
    #: Most jobs one schedule may create in any hour (recipients × firings an hour): refused at creation,
    #: and a firing that would pass it is skipped.
    schedule_max_jobs_per_hour: int = Field(default=200_000, ge=1)

    # --- campaign safety (docs/design.md, "Campaign safety") ----------------------------------------------
    #: Auto-pause defaults for new campaigns (each campaign may set its own, ``auto_pause``): a campaign
    #: pauses itself when dead deliveries reach this share of its last ``auto_pause_window`` final outcomes
    #: (0 = off), once at least ``auto_pause_min_attempts`` are in the window ...
    auto_pause_ratio: float = Field(default=0.2, ge=0, le=1)
    auto_pause_window: int = Field(default=50, ge=0, le=10_000)
    auto_pause_min_attempts: int = Field(default=10, ge=1, le=10_000)
    #: ... or when this many deliveries in a row went dead (0 = off).
    auto_pause_streak: int = Field(default=10, ge=0, le=10_000)
    #: An account pauses itself after this many throttling answers in a row despite its slow-down (0 = off;
    #: an account's ``limits.pause_after_throttles`` overrides it): that is how accounts get restricted.
    pause_after_throttles: int = Field(default=5, ge=0, le=1000)
    #: A draft campaign with more recipients than this cannot start before one of its test sends went out
    #: (0 = no requirement).
    require_test_above: int = Field(default=0, ge=0)

    # --- recipient hygiene (issue 19: suppressions, vendor callbacks) -----------------------------------------
    #: A private message whose whole text is one of these (case and surrounding spaces ignored) suppresses
    #: its sender for the account (``opted_out``). Comma-separated.
    optout_keywords: str = "TD,退订,退訂,取消订阅,取消訂閱,unsubscribe"
    #: Sent once to a recipient who just opted out (paced like any send; empty = no reply, the default).
    optout_reply: str = ""
    #: At most this many opt-out replies per account per hour; past it the opt-out is still recorded, without
    #: a reply (counted as ``reply_capped``): a flood of forged opt-outs cannot make an account message many.
    optout_reply_per_h: int = Field(default=60, ge=0)
    #: The address vendors reach this API at (``POST /v1/accounts/{id}/callback`` builds the callback URL
    #: from it unless the request names one), e.g. ``https://broadcast.example.com``.
    public_url: str = ""
    #: A vendor message id is remembered this long, so a repeated delivery (GeWe repeats, sometimes hours
    #: later) is processed once.
    callback_dedupe_h: float = Field(default=48.0, gt=0, le=24 * 30)
    #: At most this many suppressions added by an account's callbacks (opt-outs, removed contacts) per hour.
    #: Whoever holds the callback URL can write new events; past the cap an event is not applied but held
    #: (``cb:held:{account}``, counted ``held_over_cap``, one audit marker an hour) for an operator to apply.
    callback_changes_per_h: int = Field(default=300, ge=1)

    def optout_words(self) -> frozenset[str]:
        """The opt-out keywords in :func:`optout_form` (a reply is compared in the same form)."""
        return frozenset(filter(None, (optout_form(w) for w in self.optout_keywords.split(","))))

    @model_validator(mode="after")
    def _sentinel_has_a_master(self) -> Settings:
        """A Sentinel URL without the service name cannot find the primary: say so at start."""
        if self.redis_url.startswith("sentinel://") and not self.redis_master_name:
            raise ValueError("BROADCAST_REDIS_URL is a sentinel:// list: set BROADCAST_REDIS_MASTER_NAME")
        return self

    @property
    def longest_vendor_call_s(self) -> float:
        """The longest one vendor call can hold an account: the pool wait, then at most the deadline
        (connect, write and read all happen inside it, each also bounded by its own timeout)."""
        within_deadline = min(
            self.vendor_deadline_s,
            self.vendor_connect_timeout_s + self.vendor_write_timeout_s + self.vendor_read_timeout_s,
        )
        return self.vendor_pool_timeout_s + within_deadline

    @model_validator(mode="after")
    def _lease_outlives_a_call(self) -> Settings:
        """The account's lease must outlive the longest vendor call, or the dispatcher would think the
        worker dead and start another send on the same account while the first is still open."""
        needed = self.longest_vendor_call_s + self.lease_margin_s
        if self.lease_ttl_s <= needed:
            raise ValueError(
                f"BROADCAST_LEASE_TTL_S ({self.lease_ttl_s}) must exceed the longest vendor call "
                f"(pool {self.vendor_pool_timeout_s} + deadline {self.vendor_deadline_s}, capped by connect + write"
                f" + read timeouts) plus BROADCAST_LEASE_MARGIN_S ({self.lease_margin_s}) = {needed}"
            )
        return self

    def secret_keys(self) -> list[str]:
        """The configured Fernet keys, first one first."""
        return [k.strip() for k in self.secret_key.get_secret_value().split(",") if k.strip()]

    def api_tokens(self) -> list[str]:
        """The accepted API tokens (empty list when none is configured)."""
        return [t.strip() for t in self.api_token.get_secret_value().split(",") if t.strip()]

    @property
    def celery_queue(self) -> str:
        """The Celery queue name, prefixed so deployments sharing a Redis stay apart."""
        return f"{self.key_prefix}.send"


class SettingsError(ValueError):
    """A ``BROADCAST_*`` variable that does not parse: the message names each variable and what it must be,
    never the value given (it may be a token)."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment). Raises SettingsError naming the
    variables that do not parse."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(settings_problems(exc)) from None


def settings_problems(exc: ValidationError) -> str:
    """One line per variable that does not parse, ``BROADCAST_NAME: what it must be``, in English and
    Chinese; the values given are left out."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        lines.append(f"BROADCAST_{field.upper()}: {error['msg']}" if field else str(error["msg"]))
    return "\n".join(["settings from the environment that do not parse / 以下环境变量的值无效:", *lines])


def optout_form(text: str) -> str:
    """A reply as compared with the opt-out keywords: NFKC (full-width ＴＤ is TD), without format characters
    (zero-width spaces, a BOM) or lone surrogates, without the punctuation, quotes and spaces around it
    (``“退订。”``), case-folded. Whole text only: a sentence that merely contains 退订 stays a sentence."""
    text = "".join(c for c in unicodedata.normalize("NFKC", text) if not _invisible(c))
    start, end = 0, len(text)
    while start < end and _edge(text[start]):
        start += 1
    while end > start and _edge(text[end - 1]):
        end -= 1
    return unicodedata.normalize("NFKC", text[start:end].casefold())


#: Characters drawn as nothing that are not format characters (Cf): the combining grapheme joiner, variation
#: selectors (an emoji's U+FE0F), Mongolian variation selectors, Hangul fillers and the blank braille pattern
#: (Unicode's Default_Ignorable_Code_Point, plus U+2800).
_DRAWN_AS_NOTHING = frozenset(
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0, *range(0x180B, 0x1810), *range(0xFE00, 0xFE10),
     *range(0xE0100, 0xE01F0)]
)  # fmt: skip


def _invisible(char: str) -> bool:
    """Format characters (zero-width spaces, a BOM, bidi marks), lone surrogates and what is drawn as nothing."""
    return unicodedata.category(char) in ("Cf", "Cs") or ord(char) in _DRAWN_AS_NOTHING


def _edge(char: str) -> bool:
    """Punctuation (P*), symbols (S*: ``~``, ``～``, emoji such as 🙏), separators (Z*) and control whitespace
    (tab, newline) around a reply."""
    return unicodedata.category(char)[0] in "PSZ" or char.isspace()


#: Zone names that are not places: ``localtime`` is whatever the host is set to (two hosts, two days),
#: ``Factory`` and ``posixrules`` are tzdata's internals.
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules", "posix/localtime", "right/localtime"})


def known_zone(value: str) -> str:
    """``value`` if it is an IANA zone such as ``Asia/Shanghai`` that means the same on every host, else
    ValueError naming it."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r} (an IANA name such as Asia/Shanghai)") from None
    if value in _NOT_PLACES or value.startswith(("posix/", "right/")):
        raise ValueError(f"timezone {value!r} is not a place (an IANA name such as Asia/Shanghai)")
    return value
