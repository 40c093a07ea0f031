"""Shared fixtures: the vendor simulator over real HTTP, vendor accounts pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulator.server import SimulatorServer
from simulator.state import DEMO_ACCOUNTS
from worker.vendors import VendorAccount

DATA = Path(__file__).parent / "data"

#: Where each vendor's API lives under the simulator's root (GeWe hosted keeps its /gewe/v2/api prefix).
VENDOR_PREFIX = {"gewe": "/gewe/v2/api", "gewe-legacy": "", "ecloud": "", "ohwxapi": ""}


def demo(vendor: str) -> tuple[str, str]:
    """(instance, token) of the simulator's demo account for a vendor."""
    for account in DEMO_ACCOUNTS:
        if account.vendor == vendor:
            return account.instance, account.token
    raise KeyError(vendor)


@pytest.fixture(scope="session")
def sim() -> Iterator[SimulatorServer]:
    server = SimulatorServer(seed=1234)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sim_admin(sim: SimulatorServer) -> Iterator[httpx.Client]:
    """An admin client for the simulator; faults and records are reset around each test."""
    with httpx.Client(base_url=sim.url, timeout=10) as client:
        client.post("/_sim/reset").raise_for_status()
        yield client
        client.post("/_sim/reset").raise_for_status()


def account_for(sim: SimulatorServer, vendor: str, **overrides: object) -> VendorAccount:
    instance, token = demo(vendor)
    fields: dict[str, object] = {
        "vendor": vendor,
        "base_url": sim.url + VENDOR_PREFIX[vendor],
        "token": token,
        "instance": instance,
    }
    fields.update(overrides)
    return VendorAccount.model_validate(fields)


# --- Tiers --------------------------------------------------------------------------------------------

#: Fixtures that start `broadcast` processes or a browser: a test using one, directly or through another
#: fixture, gets the marker, so a new test lands in the right tier without anyone remembering to mark it.
TIER_FIXTURES = {"stack": "e2e", "api_stack": "e2e", "api": "e2e", "browser": "browser"}


def _shares_a_module_fixture(item: pytest.Item) -> bool:
    """Whether the test uses a fixture set up once per module or class (an `api` process, a browser, a
    simulator of the module's own), directly or through another fixture."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope in ("module", "class", "package") for defs in info.name2fixturedefs.values())


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the xdist_group markers added here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in TIER_FIXTURES.keys() & set(getattr(item, "fixturenames", ())):
            item.add_marker(TIER_FIXTURES[fixture])
        if item.get_closest_marker("browser"):
            item.add_marker("e2e")  # every browser test drives a served page
        # `make test` runs the tests in parallel (pytest-xdist, --dist loadgroup): the tests of a module that
        # share a module-scoped fixture go to one worker, which sets it up once (each worker has its own
        # session fixtures: a private redis-server and simulator); the other tests go wherever a worker is free.
        if _shares_a_module_fixture(item) and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Processes only for e2e tests (tests/procs.py refuses the others): an unmarked test that starts one
    fails in every run instead of quietly slowing the unit tier."""
    from tests import procs

    procs.processes_allowed = item.get_closest_marker("e2e") is not None


# --- Redis, worker and scheduler ---------------------------------------------------------------------

import itertools  # noqa: E402
import os  # noqa: E402
import uuid  # noqa: E402

import redis as redis_lib  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

import scheduler.devtools.embedded  # noqa: E402
from tests import procs  # noqa: E402
from tests.procs import Proc, RedisServer, wait_for  # noqa: E402

# Every port a test picks for a server it starts comes from this xdist worker's own block (tests/procs.py,
# free_port): set before the test modules import free_port by name.
scheduler.devtools.embedded.free_port = procs.free_port
from worker.store.accounts import AccountSpec, AccountStore  # noqa: E402
from worker.store.keys import Keys  # noqa: E402
from worker.store.ledger import TERMINAL, Claim, Job, Ledger  # noqa: E402


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server for the whole run (BROADCAST_TEST_REDIS_URL uses an existing one instead;
    tests then isolate themselves by key prefix and never flush it)."""
    given = os.environ.get("BROADCAST_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer()
    yield server.url
    server.stop()


_counter = itertools.count()

#: Fast-test settings: short backoffs, leases and vendor timeouts so failure paths finish in seconds.
FAST_ENV = {
    # prod stores vendor tokens only encrypted (PUT /v1/accounts answers 409 secret_key_required without a key)
    "BROADCAST_SECRET_KEY": Fernet.generate_key().decode(),
    # the simulator listens on loopback, which vendor calls may not reach in prod (BROADCAST_VENDOR_DENY=auto)
    "BROADCAST_VENDOR_ALLOW": "127.0.0.0/8",
    "BROADCAST_RETRY_BASE_S": "0.05",
    "BROADCAST_RETRY_MAX_S": "0.5",
    "BROADCAST_QUICK_RETRY_MAX_WAIT_S": "0.05",
    "BROADCAST_LEASE_TTL_S": "3",
    "BROADCAST_LEASE_MARGIN_S": "0.5",
    "BROADCAST_VENDOR_READ_TIMEOUT_S": "1.5",
    "BROADCAST_VENDOR_CONNECT_TIMEOUT_S": "1",
    "BROADCAST_VENDOR_POOL_TIMEOUT_S": "0.5",
    "BROADCAST_VENDOR_DEADLINE_S": "1.5",
    # after an abandoned call the account cools down (30 s by default): short here, tests/e2e/test_media.py
    # checks it with its own value
    "BROADCAST_ABANDONED_COOLDOWN_S": "0.5",
    "BROADCAST_WORKER_CONCURRENCY": "32",
    # one worker process per test stack (faster to start); tests/worker/runtime/test_processes.py runs several
    "BROADCAST_WORKER_PROCESSES": "1",
    "BROADCAST_DISPATCH_IDLE_S": "0.02",
    "BROADCAST_BATCH_MAX_S": "5",
    "BROADCAST_SCHEDULE_MIN_INTERVAL_S": "1",
}


class Stack:
    """A key prefix of its own, with accounts on the simulator, and real worker/scheduler processes."""

    def __init__(self, redis_url: str, sim: SimulatorServer, tmp: Path, **env: str) -> None:
        self.prefix = f"t{next(_counter)}{uuid.uuid4().hex[:6]}"
        self.sim = sim
        self.tmp = tmp
        self.env = {"BROADCAST_REDIS_URL": redis_url, "BROADCAST_KEY_PREFIX": self.prefix, **FAST_ENV, **env}
        self.redis = redis_lib.Redis.from_url(redis_url, decode_responses=True)
        self.ledger = Ledger(self.redis, self.prefix)
        self.accounts = AccountStore(self.redis, self.prefix, secret_keys=self.env["BROADCAST_SECRET_KEY"].split(","))
        self.procs: list[Proc] = []

    def add_account(self, account_id: str, vendor: str, *, instance: str | None = None, **limits: object) -> str:
        """An account on the simulator; a fresh simulator instance when ``instance`` is given."""
        demo_instance, token = demo(vendor)
        if instance is not None:
            token = f"tok-{instance}-secret"
            with httpx.Client(base_url=self.sim.url) as admin:
                admin.post(
                    "/_sim/accounts",
                    json={"vendor": vendor, "instance": instance, "token": token if vendor != "ohwxapi" else ""},
                ).raise_for_status()
            if vendor == "ohwxapi":
                token = ""
        spec = AccountSpec.model_validate(
            {
                "vendor": vendor,
                "base_url": self.sim.url + VENDOR_PREFIX[vendor],
                "token": token,
                "instance": instance or demo_instance,
                "limits": {"per_minute": 0, **limits},
            }
        )
        self.accounts.put(account_id, spec)
        return account_id

    def start(self, what: str, *args: str) -> Proc:
        proc = Proc([what, *args], self.env, self.tmp / f"{what}-{len(self.procs)}.log")
        self.procs.append(proc)
        return proc

    def start_worker(self, *args: str) -> Proc:
        return self.start("worker", "--without-gossip", "--without-mingle", *args)

    def wait_terminal(self, job_ids: list[str], timeout: float = 60) -> list[Job]:
        def done() -> bool:
            return all(j is not None and j.state in TERMINAL for j in self.ledger.get_many(job_ids))

        try:
            wait_for(done, timeout=timeout, what=f"{len(job_ids)} jobs to finish", interval=0.1)
        except TimeoutError as exc:
            states = [j.state if j else None for j in self.ledger.get_many(job_ids)]
            raise TimeoutError(
                f"not terminal: {[s for s in states if s not in TERMINAL][:20]}; logs:\n{self.logs()[-4000:]}"
            ) from exc
        return [j for j in self.ledger.get_many(job_ids) if j is not None]

    def logs(self) -> str:
        return "\n".join(p.output() for p in self.procs)

    def stop(self) -> None:
        """End the processes at once (SIGKILL to each group): nothing is asserted after this, and a warm
        shutdown costs a second or two per test. The graceful stop is tested where it is the point
        (tests/worker/runtime/test_processes.py sends SIGTERM itself)."""
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def stack(redis_url: str, sim: SimulatorServer, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(redis_url, sim, tmp_path)
    yield s
    s.stop()


API_TOKEN = "test-api-token-7f3e2a91"


class ApiStack(Stack):
    """A Stack with the HTTP API served by a real `broadcast api` process."""

    def __init__(self, redis_url: str, sim: SimulatorServer, tmp: Path, **env: str) -> None:
        super().__init__(redis_url, sim, tmp, **{"BROADCAST_API_TOKEN": f"other-key,{API_TOKEN}", **env})
        from scheduler.devtools.embedded import free_port

        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.start("api", "--port", str(self.api_port))
        wait_for(self._api_up, timeout=30, what="the API")
        self.http = httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)

    def _api_up(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stored_keys(self) -> int:
        """How many keys this stack's prefix holds (to prove a refused request stored nothing). The audit
        trail is not counted, nor its count of a key's refusals this minute: a refused change is recorded
        there on purpose (who tried what); nor the dispatcher's ``wake`` list, which comes and goes as running
        processes nudge it (a full run once saw it appear between two counts)."""
        keys = Keys(self.prefix)
        refusals = f"{self.prefix}:audit_refused:"
        return sum(
            1
            for k in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)
            if k not in (keys.audit, keys.wake) and not k.startswith(refusals)
        )

    def stop(self) -> None:
        self.http.close()
        super().stop()


@pytest.fixture
def api_stack(redis_url: str, sim: SimulatorServer, tmp_path: Path) -> Iterator[ApiStack]:
    s = ApiStack(redis_url, sim, tmp_path)
    yield s
    s.stop()


def drop_prefix(client: redis_lib.Redis, prefix: str) -> None:
    """Delete every key under ``prefix`` (a test's own keys on the session's shared Redis)."""
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)


def claim_ready(ledger: Ledger, *, lease_ttl_s: float, batch_size: int = 1, now: float | None = None) -> list[Claim]:
    """A dispatcher round without pacing: promote what is due, then give every due account a session of up
    to ``batch_size`` jobs (the store's part of the dispatcher, for tests of the store itself)."""
    due = ledger.tick(now=now).due
    return ledger.claim(lease_ttl_s=lease_ttl_s, candidates=[(a, batch_size, 0.0, 0.0) for a in sorted(due)], now=now)


@pytest.fixture(scope="module")
def api(redis_url: str, sim: SimulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    """One `broadcast api` (no worker, no scheduler) shared by a module's tests: each starting its own costs
    a second and more. Tests on it isolate themselves by account id and compare stored keys before/after;
    a test that needs running workers or an empty prefix takes ``api_stack``."""
    s = ApiStack(redis_url, sim, tmp_path_factory.mktemp("api"))
    yield s
    s.stop()
