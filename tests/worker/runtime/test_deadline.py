"""One overall deadline per vendor call: a vendor that dribbles its answer cannot hold an account past its
lease, so a second send for the same account never starts while the first call is still open."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from scheduler.intake.producer import Producer
from simulator.server import SimulatorServer
from tests.conftest import Stack
from tests.rawhttp import RawServer, gewe_sent, http_ok, read_request
from worker.runtime.connections import new_vendor_http_client
from worker.settings import Settings
from worker.store.accounts import AccountSpec

DRIBBLE_BYTES = 60
DRIBBLE_EVERY_S = 0.2  # 60 bytes take 12 s: far past the tests' 3 s lease


@dataclass
class Call:
    """One request as the vendor saw it: when it arrived, when the connection ended, how it ended."""

    arrived: float
    ended: float = 0.0
    dribbled: int = 0
    closed_by_client: bool = False


class DribblingVendor(RawServer):
    """A GeWe-speaking server whose first answer trickles out a byte at a time; later answers are quick."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            while read_request(conn) is not None:
                call = Call(arrived=time.time())
                with self.lock:
                    first = not self.calls
                    self.calls.append(call)
                if first:
                    head = (
                        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {DRIBBLE_BYTES}\r\n\r\n"
                    )
                    conn.sendall(head.encode())
                    for _ in range(DRIBBLE_BYTES):
                        try:
                            conn.sendall(b" ")
                        except OSError:
                            call.closed_by_client = True
                            break
                        call.dribbled += 1
                        time.sleep(DRIBBLE_EVERY_S)
                    call.ended = time.time()
                    return
                conn.sendall(http_ok(gewe_sent()))
                call.ended = time.time()


@pytest.fixture
def dribbler() -> Iterator[DribblingVendor]:
    vendor = DribblingVendor()
    yield vendor
    vendor.close()


def test_the_client_hangs_up_at_the_deadline_not_when_the_vendor_finishes(dribbler: DribblingVendor) -> None:
    settings = Settings(vendor_deadline_s=1.0, vendor_read_timeout_s=0.5, lease_ttl_s=60, vendor_allow="127.0.0.0/8")
    with new_vendor_http_client(settings) as client, pytest.raises(httpx.ReadTimeout):
        # every byte arrives well within the 0.5 s read timeout; only the overall deadline can end this
        client.post(f"{dribbler.url}/message/postText", content=b"{}")
    deadline = time.monotonic() + 10
    while not dribbler.calls[0].ended and time.monotonic() < deadline:
        time.sleep(0.05)
    (call,) = dribbler.calls
    assert call.closed_by_client and call.dribbled < DRIBBLE_BYTES


@pytest.mark.e2e
def test_a_dribbling_vendor_never_gets_a_second_send_for_the_account_in_flight(
    redis_url: str, sim: SimulatorServer, dribbler: DribblingVendor, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    stack = Stack(redis_url, sim, tmp_path)  # lease 3 s, vendor deadline 1.5 s (tests/conftest.py FAST_ENV)
    try:
        spec = AccountSpec.model_validate(
            {
                "vendor": "gewe",
                "base_url": dribbler.url,
                "token": "dribble-token",
                "instance": "wx_dribble",
                "limits": {"per_minute": 600, "min_interval_s": 1.0, "jitter_s": 0},
            }
        )
        stack.accounts.put("dribbled", spec)
        producer = Producer(stack.ledger, stack.accounts)
        text = {"kind": "text", "text": "hi"}
        first = producer.submit_message(account="dribbled", to="wxid_first", message=text).id
        second = producer.submit_message(account="dribbled", to="wxid_second", message=text).id
        stack.start_worker()
        stack.start("scheduler")
        jobs = {job.id: job for job in stack.wait_terminal([first, second], timeout=60)}
    finally:
        stack.stop()
    calls = dribbler.calls
    assert len(calls) == 2, calls
    slow, quick = calls
    # the worker hung up on the dribbling answer before it was complete...
    assert slow.closed_by_client and slow.dribbled < DRIBBLE_BYTES
    # ...and only then, a full gap later, did the account's next send start: never two in flight
    assert quick.arrived > slow.ended
    assert (jobs[first].state, jobs[first].fields["reason"]) == ("dead", "unknown_outcome")
    assert jobs[first].fields["error_class"] == "ambiguous"
    assert jobs[second].state == "sent"


def test_startup_refuses_a_lease_that_does_not_outlive_the_longest_call() -> None:
    with pytest.raises(ValueError, match="BROADCAST_LEASE_TTL_S"):
        Settings(lease_ttl_s=50, vendor_deadline_s=45, vendor_pool_timeout_s=5, lease_margin_s=5)
    # every timeout counts: a deadline longer than connect + write + read is capped by them
    capped = Settings(vendor_deadline_s=600, vendor_connect_timeout_s=5, vendor_write_timeout_s=10,
                      vendor_read_timeout_s=30, vendor_pool_timeout_s=5, lease_ttl_s=56)  # fmt: skip
    assert capped.longest_vendor_call_s == 50
