"""A real Flower process watching real workers: our tasks are found through Flower's HTTP API."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from scheduler.devtools.embedded import free_port
from scheduler.intake.producer import Producer
from tests.conftest import Stack
from tests.e2e.test_pipeline import MESSAGES
from tests.procs import wait_for

AUTH = ("ops", "flower-test-pw")


@pytest.mark.timeout(180)
def test_flower_shows_our_tasks_with_ids_and_no_secrets(stack: Stack) -> None:
    port = free_port()
    stack.env["FLOWER_BASIC_AUTH"] = ":".join(AUTH)
    stack.start("flower", "--port", str(port))
    url = f"http://127.0.0.1:{port}"

    def flower_up() -> bool:
        try:
            return httpx.get(f"{url}/api/workers", auth=AUTH, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(flower_up, timeout=60, what="Flower")
    assert httpx.get(f"{url}/api/workers", timeout=2).status_code == 401  # basic auth is enforced

    account = stack.add_account("flowery", "gewe", instance=f"inst-{stack.prefix}-fl")
    token = stack.accounts.get(account).spec.token.get_secret_value()  # type: ignore[union-attr]
    stack.start_worker()
    stack.start("scheduler")
    producer = Producer(stack.ledger, stack.accounts)
    job_ids = [
        producer.submit_message(account=account, to=f"wxid_f{i}", message=MESSAGES["mini-structured"]).id
        for i in range(3)
    ]
    stack.wait_terminal(job_ids)

    def our_tasks() -> dict[str, Any]:
        tasks: dict[str, Any] = httpx.get(f"{url}/api/tasks", auth=AUTH, timeout=5).json()
        return {
            tid: t
            for tid, t in tasks.items()
            if t.get("name") == "broadcast.send_sessions" and t.get("state") == "SUCCESS"
        }

    wait_for(lambda: bool(our_tasks()), timeout=30, what="Flower to see a send_sessions task")
    tasks = our_tasks()
    text = json.dumps(tasks)
    assert token not in text
    seen_jobs = {job for job in job_ids if job in text}
    assert seen_jobs == set(job_ids), "every job id should be visible in some task's arguments"
    task = next(iter(tasks.values()))
    assert account in task["args"] and "miniprogram" in task["kwargs"]  # kind and account for operators
    assert "'sent': " in str(task["result"])  # the batch's summary

    def workers_seen() -> bool:
        return bool(httpx.get(f"{url}/api/workers", params={"refresh": "1"}, auth=AUTH, timeout=10).json())

    wait_for(workers_seen, timeout=30, what="Flower to list our worker")
