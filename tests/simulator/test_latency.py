"""The simulator's answer latency (``/_sim/latency``): every send waits, without blocking other requests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from simulator import SimulatorServer
from simulator.state import SimState

GEWE_TOKEN = {"X-GEWE-TOKEN": "demo-gewe-token"}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=99) as server:
        yield server


@pytest.fixture()
def admin(sim: SimulatorServer) -> Iterator[httpx.Client]:
    sim.state.reset()
    with httpx.Client(base_url=sim.url, timeout=10.0) as client:
        yield client
    sim.state.reset()


async def _post_texts(url: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:

        async def one(i: int) -> None:
            body = {"appId": "wx_demo_gewe", "toWxid": f"wxid_lat_{i}", "content": "hi"}
            response = await client.post("/gewe/v2/api/message/postText", json=body, headers=GEWE_TOKEN)
            assert response.json()["ret"] == 200

        await asyncio.gather(*(one(i) for i in range(count)))


def test_sends_answer_after_the_latency_and_overlap(sim: SimulatorServer, admin: httpx.Client) -> None:
    """Each send is held for the latency, and concurrent sends are held together (asyncio.sleep, not a block)."""
    assert admin.post("/_sim/latency", json={"latency_s": 0.3}).json() == {
        "latency_s": 0.3,
        "spread_s": 0.0,
        "media_s": [0.0, 0.0],
    }
    asyncio.run(_post_texts(sim.url, 5))
    records = admin.get("/_sim/sends", params={"instance": "wx_demo_gewe"}).json()["sends"]
    assert len(records) == 5
    # held for the latency (timestamps are wall-clock, the sleep is the loop's monotonic clock: 2 ms slack)
    assert all(r["sent_at"] - r["received_at"] >= 0.298 for r in records)
    # every request arrived before any answer left: the five waits ran concurrently
    assert max(r["received_at"] for r in records) < min(r["sent_at"] for r in records)


def test_reset_clears_the_latency(admin: httpx.Client) -> None:
    admin.post("/_sim/latency", json={"latency_s": 1.5, "spread_s": 0.5}).raise_for_status()
    admin.post("/_sim/latency", json={"media_s": [2, 10]}).raise_for_status()  # the other part is kept
    assert admin.get("/_sim/latency").json() == {"latency_s": 1.5, "spread_s": 0.5, "media_s": [2.0, 10.0]}
    admin.post("/_sim/reset").raise_for_status()
    assert admin.get("/_sim/latency").json() == {"latency_s": 0.0, "spread_s": 0.0, "media_s": [0.0, 0.0]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"latency_s": -1}, "latency_s"),
        ({"latency_s": "fast"}, "latency_s"),
        ({"latency_s": 10_000}, "latency_s"),
        ({"latency_s": 0.2, "spread_s": 0.3}, "spread_s"),
        ({"latency_s": 0.2, "spread_s": True}, "spread_s"),
        ({"latency": 0.2}, "latency"),
        ({"media_s": [3, 2]}, "media_s"),
        ({"media_s": 2}, "media_s"),
        ({"media_s": [-1, 2]}, "media_s"),
    ],
)
def test_bad_latency_is_refused_naming_the_field(admin: httpx.Client, body: dict[str, object], field: str) -> None:
    response = admin.post("/_sim/latency", json=body)
    assert response.status_code == 400
    assert field in response.json()["error"]
    assert admin.get("/_sim/latency").json() == {"latency_s": 0.0, "spread_s": 0.0, "media_s": [0.0, 0.0]}


def test_spread_draws_uniformly_within_bounds() -> None:
    state = SimState(seed=7)
    state.set_latency(0.3, 0.2)
    draws = [state.draw_latency() for _ in range(1000)]
    assert all(0.1 <= d <= 0.5 for d in draws)
    assert sum(d < 0.3 for d in draws) > 400 and sum(d > 0.3 for d in draws) > 400  # both sides of L
    state.set_latency(0.25)
    assert {state.draw_latency() for _ in range(10)} == {0.25}
