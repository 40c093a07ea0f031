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
