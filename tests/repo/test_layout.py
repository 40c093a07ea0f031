"""One list of each thing: the lists others derive from agree with what the code actually registers."""

import json
import re
import uuid
from pathlib import Path
from typing import get_args

import pytest
import redis

from simulator.state import VENDORS as SIMULATED_VENDORS
from worker.store import scripts
from worker.store.keys import LAYOUT, Keys
from worker.store.vocabulary import LUA_TABLES, BeginStatus, CampaignStatus, CancelReason, DeadReason
from worker.vendors.base import VendorName, registered_vendors


def test_the_vendor_list_is_the_registry() -> None:
    assert sorted(get_args(VendorName)) == registered_vendors()


def test_the_simulator_simulates_every_vendor() -> None:
    assert sorted(SIMULATED_VENDORS) == sorted(get_args(VendorName))


# --- Lua as Lua, keys in one place ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "worker" / "store" / "lua"
SCRIPTS = sorted(f.stem for f in LUA.glob("*.lua") if not f.stem.startswith("prelude"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_compiles_on_redis(redis_url: str, name: str) -> None:
    client = redis.Redis.from_url(redis_url)
    sha = client.script_load(scripts.source(name).text)
    assert client.script_exists(sha) == [True]


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_opens_with_its_keys_argv_and_reply(name: str) -> None:
    text = (LUA / f"{name}.lua").read_text()
    assert text.startswith("--[[\n"), name
    header = text[: text.index("\n]]\n")]
    for word in ("KEYS:", "ARGV:", "Returns"):
        assert word in header, f"{name}.lua: no {word} in its header"


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
    source = scripts.source("finish_sent")
    lines = (LUA / "finish_sent.lua").read_text().splitlines()
    include = lines.index("--!include prelude_finish") + 1  # after the header comment and the includes
    prelude_start = next(first for first, file, _ in source.parts if file == "prelude.lua")
    body_start = max(first for first, file, _ in source.parts if file == "finish_sent.lua")
    assert source.where(prelude_start + 4) == "prelude.lua:5"
    assert source.where(1) == "<generated>:1"
    assert source.where(body_start) == f"finish_sent.lua:{include + 1}"
    assert source.text.splitlines()[body_start - 1] == lines[include]
    header_start = min(first for first, file, _ in source.parts if file == "finish_sent.lua")
    assert source.where(header_start) == "finish_sent.lua:1"


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


# --- one vocabulary: job states, outcomes, reasons and campaign statuses are the Python enums' ------------------

#: Spelled by hand in Lua, these are fine: ``part.lua`` answers go/early/lost/busy (PartBegin, not BeginStatus),
#: an account's status (``paused``, ``down``) is not a campaign's, and a campaign's ``owner_revoked`` flag is a
#: field of its hash, not a job's cancel reason.
_LITERAL_OK = {BeginStatus.GO, BeginStatus.EARLY, BeginStatus.LOST, CampaignStatus.PAUSED, CancelReason.OWNER_REVOKED}
_QUOTED = re.compile(r"'(\w+)'|\"(\w+)\"")


def _lua_code(text: str) -> list[tuple[int, str]]:
    """Each line of a Lua source without its comments (``--`` outside a string, ``--[[ ... ]]`` blocks)."""
    lines, block = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if block or line.startswith("--[["):
            block = not line.startswith("]]")
            continue
        quote, code = None, line
        for i, ch in enumerate(line):
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif line.startswith("--", i):
                code = line[:i]
                break
        lines.append((n, code))
    return lines


def _spelled_by_hand(text: str) -> list[str]:
    words = {m.value for enum in LUA_TABLES.values() for m in enum} - {str(v) for v in _LITERAL_OK}
    return [
        f"{n}: {word}"
        for n, code in _lua_code(text)
        for m in _QUOTED.finditer(code)
        if (word := m.group(1) or m.group(2)) in words
    ]


def test_no_script_spells_a_job_state_or_outcome_by_hand() -> None:
    offenders = [f"{f.name}:{hit}" for f in sorted(LUA.glob("*.lua")) for hit in _spelled_by_hand(f.read_text())]
    assert offenders == []


def test_the_vocabulary_check_catches_a_hand_spelled_state() -> None:
    assert _spelled_by_hand("if st == 'sending' then") == ["1: sending"]
    assert _spelled_by_hand('move(jk, st, "dead", camp)') == ["1: dead"]
    assert _spelled_by_hand("if reason == 'unknown_outcome' then return {'skip'} end") == [
        "1: unknown_outcome",
        "1: skip",
    ]
    assert _spelled_by_hand("if st == STATE.SENDING then  -- 'sending'") == []
    assert _spelled_by_hand("--[[\n  'sending'\n]]\nreturn 1") == []


def test_the_lua_names_are_the_python_enums(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    for name, enum in LUA_TABLES.items():
        table = ", ".join(f"{m.name} = {name}.{m.name}" for m in enum)
        encoded = client.eval(scripts.spell(f"return cjson.encode({{{table}}})"), 0)
        assert json.loads(encoded) == {m.name: m.value for m in enum}, name
    assert re.search(r"\bSTATE\.\w", scripts.source("finish_sent").text) is None  # all spelled out


def test_a_member_the_enum_lacks_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scripts, "_read", lambda file: "return STATE.SENDNG\n")
    scripts.source.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"STATE\.SENDNG not in worker/store/vocabulary.py"):
            scripts.source("typo")
    finally:
        scripts.source.cache_clear()


def test_the_console_offers_every_dead_letter_reason_and_names_each_in_both_languages() -> None:
    console = (ROOT / "scheduler" / "console" / "static" / "console.js").read_text()
    listed = re.search(r"const DEAD_REASONS = \[([^\]]*)\]", console)
    assert listed is not None
    assert re.findall(r'"(\w+)"', listed.group(1)) == [r.value for r in DeadReason]  # the filter's choices
    for reason in DeadReason:  # a label in the zh table and one in the en table
        assert len(re.findall(rf"\bdr_{reason.value}: \"[^\"]+\"", console)) == 2, reason
