"""Fixtures of the session-execution tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis as redis_lib

from tests.conftest import drop_prefix
from worker.store.accounts import AccountStore


@pytest.fixture
def accounts(redis_url: str) -> Iterator[AccountStore]:
    """An account store of its own prefix on the session's Redis, its keys removed afterwards."""
    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    store = AccountStore(client, f"lease{uuid.uuid4().hex[:8]}")
    yield store
    drop_prefix(client, store.prefix)
