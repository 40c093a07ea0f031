"""Logs: one structured line per send attempt, secrets redacted."""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import quote, quote_plus

import pytest

from scheduler.intake.producer import Producer
from tests.conftest import Stack
from tests.e2e.test_pipeline import add_fault, clear_faults
from worker.errors import redact
from worker.logs import JsonFormatter, RedactingFilter


@pytest.mark.e2e
def test_json_logs_have_one_line_per_attempt_with_ids_and_no_token(redis_url: str, sim, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stack = Stack(redis_url, sim, tmp_path, BROADCAST_LOG_JSON="true")
    try:
        instance = f"inst-{stack.prefix}-log"
        account = stack.add_account("logged", "gewe", instance=instance)
        token = stack.accounts.get(account).spec.token.get_secret_value()  # type: ignore[union-attr]
        add_fault(stack, kind="http_503", instance=instance, to="wxid_l1", times=3)  # 3 quick tries fail → retry
        producer = Producer(stack.ledger, stack.accounts)
        ids = [
            producer.submit_message(account=account, to=f"wxid_l{i}", message={"kind": "text", "text": "x"}).id
            for i in range(3)
        ]
        stack.start_worker()
        stack.start("scheduler")
        stack.wait_terminal(ids)
        lines = [json.loads(line) for line in stack.logs().splitlines() if line.startswith("{")]
        attempts = [line for line in lines if line.get("logger") == "broadcast.send"]
        assert len(attempts) == 4  # 3 sends + 1 failed attempt that was retried
        for line in attempts:
            assert {"job_id", "account", "vendor", "outcome", "latency_ms", "ts", "level"} <= set(line)
            assert line["account"] == account and line["vendor"] == "gewe"
        sent = [line for line in attempts if line["outcome"] == "sent"]
        assert len(sent) == 3 and all(line["ids"]["new_msg_id"].isdigit() for line in sent)
        retried = [line for line in attempts if line["outcome"] == "retry"]
        assert retried[0]["error_class"] == "transient" and retried[0]["job_id"] == ids[1]
        assert token not in stack.logs()
    finally:
        clear_faults(stack)
        stack.stop()


def test_redacting_filter_scrubs_message_args_and_extras() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    redactor = RedactingFilter(["s3cr3t-token-value"])
    handler.addFilter(redactor)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling with %s", "s3cr3t-token-value", extra={"header": "X-GEWE-TOKEN s3cr3t-token-value"})
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert "s3cr3t-token-value" not in stream.getvalue()
    assert line["message"] == "calling with ***" and line["header"] == "X-GEWE-TOKEN ***"


def test_a_secret_echoed_encoded_or_recased_is_scrubbed_from_logs_and_errors() -> None:
    """A vendor (or a proxy) may echo a token URL-encoded, base64-encoded or in another case."""
    secret = "tok/8f+3a=9c"
    echoes = [
        quote(secret, safe=""),  # tok%2F8f%2B3a%3D9c
        quote_plus(secret),
        base64.b64encode(secret.encode()).decode(),
        base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
        secret.upper(),
    ]
    text = " | ".join(echoes)
    assert redact(text, [secret]) == " | ".join(["***"] * len(echoes))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([secret]))
    logger = logging.getLogger("test.redaction.forms")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("vendor said: %s", text)
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().strip() == "vendor said: " + " | ".join(["***"] * len(echoes))
