"""A proxy in front of the vendor answers garbage *after* the vendor sent: the message goes out once.

The proxy forwards each request to the simulator (which records the send, exactly as a real vendor would
deliver it), then answers the worker with a gateway's 504, a 200 with an HTML body, or no answer at all
(connection closed after the request was written). None of these says whether the message went out, so
each must end as an unknown outcome for a person to review — never a blind resend.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from scheduler.intake.producer import Producer
from simulator.server import SimulatorServer
from tests.conftest import VENDOR_PREFIX, Stack
from tests.e2e.test_pipeline import sim_sends
from worker.store.accounts import AccountSpec
from worker.store.deadletter import DeadLetters


class GarblingProxy:
    """A threaded HTTP proxy to one upstream; ``mode`` says how it spoils the upstream's answer."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self.forwarded = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.post(proxy.upstream + self.path, content=body, headers=headers, timeout=10)
                proxy.forwarded += 1
                if proxy.mode == "drop":
                    self.close_connection = True  # the request was written and read; no answer comes back
                    return
                status, payload, ctype = {
                    "504": (504, b"<html><body>504 Gateway Time-out</body></html>", "text/html"),
                    "html200": (200, b"<html><body>upstream says hi</body></html>", "text/html"),
                }.get(proxy.mode, (answer.status_code, answer.content, answer.headers.get("content-type", "")))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(sim: SimulatorServer) -> Iterator[GarblingProxy]:
    p = GarblingProxy(sim.url)
    yield p
    p.close()


def behind_proxy(stack: Stack, proxy: GarblingProxy, account: str, vendor: str, **options: str) -> None:
    """Point an account at the proxy instead of the simulator."""
    current = stack.accounts.get(account)
    assert current is not None
    data = current.spec.model_dump()
    data.update(base_url=proxy.url + VENDOR_PREFIX[vendor], token=current.spec.token.get_secret_value())
    data["options"] = {**data["options"], **options}
    stack.accounts.put(account, AccountSpec.model_validate(data))


@pytest.mark.parametrize(("mode", "vendor"), [("504", "gewe"), ("html200", "ecloud"), ("drop", "ohwxapi")])
def test_a_garbled_answer_after_the_vendor_sent_is_an_unknown_outcome_sent_once(
    stack: Stack, proxy: GarblingProxy, mode: str, vendor: str
) -> None:
    instance = f"inst-{stack.prefix}-{mode}"
    account = stack.add_account(f"garbled-{mode}", vendor, instance=instance)
    behind_proxy(stack, proxy, account, vendor)
    proxy.mode = mode
    producer = Producer(stack.ledger, stack.accounts)
    job_id = producer.submit_message(account=account, to="wxid_once", message={"kind": "text", "text": "hi"}).id
    stack.start_worker()
    stack.start("scheduler")
    (job,) = stack.wait_terminal([job_id])

    records = sim_sends(stack, instance=instance, to="wxid_once")
    assert len(records) == 1, records  # the vendor delivered it exactly once
    assert proxy.forwarded == 1  # and no retry ever reached the proxy
    assert (job.state, job.fields["reason"], job.fields["error_class"]) == ("dead", "unknown_outcome", "ambiguous")
    assert len(stack.ledger.history(job_id)) == 1
    # a replay of an unknown outcome needs --force: nobody resends it by accident
    assert stack.ledger.replay(job_id) == "unknown_outcome"
    assert job_id in [row.job.id for row in DeadLetters(stack.ledger).list(reason="unknown_outcome")]


@pytest.mark.e2e
def test_at_least_once_is_an_explicit_per_account_choice(
    redis_url: str, sim: SimulatorServer, proxy: GarblingProxy, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    stack = Stack(redis_url, sim, tmp_path, BROADCAST_MAX_ATTEMPTS_TRANSIENT="3")
    try:
        instance = f"inst-{stack.prefix}-alo"
        account = stack.add_account("at-least-once", "gewe", instance=instance)
        behind_proxy(stack, proxy, account, "gewe", unknown_outcome="retry")
        proxy.mode = "504"
        producer = Producer(stack.ledger, stack.accounts)
        job_id = producer.submit_message(account=account, to="wxid_alo", message={"kind": "text", "text": "x"}).id
        stack.start_worker()
        stack.start("scheduler")
        (job,) = stack.wait_terminal([job_id])
        # the operator chose resends over review: every attempt reached the vendor, then it gave up
        assert len(sim_sends(stack, instance=instance, to="wxid_alo")) == 3
        assert (job.state, job.fields["reason"]) == ("dead", "unknown_outcome")
    finally:
        stack.stop()
