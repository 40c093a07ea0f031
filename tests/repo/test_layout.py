"""One list of each thing: the lists others derive from agree with what the code actually registers."""

import re
import uuid
from pathlib import Path
from typing import get_args

import pytest
import redis

from simulator.state import VENDORS as SIMULATED_VENDORS
from worker.store import scripts
from worker.store.keys import LAYOUT, Keys
from worker.vendors.base import VendorName, registered_vendors


def test_the_vendor_list_is_the_registry() -> None:
    assert sorted(get_args(VendorName)) == registered_vendors()


def test_the_simulator_simulates_every_vendor() -> None:
    assert sorted(SIMULATED_VENDORS) == sorted(get_args(VendorName))


# --- Lua as Lua, keys in one place ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "worker" / "store" / "lua"
SCRIPTS = sorted(f.stem for f in LUA.glob("*.lua") if f.stem != "prelude")


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_compiles_on_redis(redis_url: str, name: str) -> None:
    client = redis.Redis.from_url(redis_url)
    sha = client.script_load(scripts.source(name).text)
    assert client.script_exists(sha) == [True]


def test_a_script_error_names_the_lua_file_and_line(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    client.set(keys.lease("acc"), "tok", px=10_000)
    touch = scripts.register(client, "touch")
    with pytest.raises(redis.ResponseError) as caught:
        touch(args=[prefix, "acc", "tok", "not-a-number"])  # PEXPIRE gets nil
    pexpire_line = next(
        n for n, line in enumerate((LUA / "touch.lua").read_text().splitlines(), 1) if "PEXPIRE" in line
    )
    assert f"touch.lua:{pexpire_line}" in str(caught.value)
    assert "user_script" not in str(caught.value)
    client.delete(keys.lease("acc"))


def test_an_included_prelude_line_maps_to_the_prelude() -> None:
    source = scripts.source("finish")
    prelude_start = next(first for first, file, _ in source.parts if file == "prelude.lua")
    body_start = next(first for first, file, _ in source.parts if file == "finish.lua")
    assert source.where(prelude_start + 4) == "prelude.lua:5"
    assert source.where(body_start) == "finish.lua:2"  # line 1 is the --!include directive
    assert source.text.splitlines()[body_start - 1] == (LUA / "finish.lua").read_text().splitlines()[1]


def _key_spellings() -> list[re.Pattern[str]]:
    """How a key of LAYOUT would be spelled by hand: ``:job:`` in Python or Lua text, ``':sched'``..."""
    heads = sorted({template.split(":")[0].split("{")[0] for template in LAYOUT.values()})
    return [re.compile(rf"[:]{re.escape(head)}(?:[:]|['\"])") for head in heads]


def test_no_key_is_spelled_outside_the_key_module() -> None:
    patterns = _key_spellings()
    files = [
        *ROOT.glob("worker/**/*.py"),
        *ROOT.glob("scheduler/**/*.py"),
        *ROOT.glob("bench/*.py"),
        *LUA.glob("*.lua"),
    ]
    offenders = []
    for file in files:
        if file == ROOT / "worker" / "store" / "keys.py":
            continue
        for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if any(p.search(line) for p in patterns):
                offenders.append(f"{file.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


def test_the_key_check_catches_a_hand_spelled_key() -> None:
    patterns = _key_spellings()
    for spelled in ('f"{prefix}:job:{job_id}"', "p .. ':lease:' .. a", "p .. ':sched'", "prefix + ':dlq'"):
        assert any(p.search(spelled) for p in patterns), spelled
