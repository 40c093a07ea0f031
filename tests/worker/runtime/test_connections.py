"""The product's Redis clients pack commands in one C call (CommandPacker): the same bytes as redis-py's own
packer for every argument type the store sends, redis-py's packer and checks for anything else, and the
same answers from a real server."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import redis
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from worker.runtime.connections import COMMAND_PACKER, new_redis_client
from worker.settings import Settings
from worker.store import scripts
from worker.store.scripts import SharedRoundTrips, hash_reply, register, round_trip

REFERENCE: Any = PythonRespSerializer(6000, Encoder("utf-8", "strict", True).encode)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 0, "prefix", "acct", "1700000000.123456", '{"n": 1}', 86400, ""),
        ("SET", "k", 0.1),
        ("SET", "k", 1e20),
        ("SET", "k", float("inf")),
        ("SET", "k", -3),
        ("SET", "k", 2**70),
        ("SET", "k", "中文 and spaces"),
        ("SET", "k", b"x\x00y"),
        ("SET", "k", memoryview(b"view")),
        ("SET", "k", bytearray(b"array")),  # hiredis refuses it: redis-py's packer takes it
        ("CLIENT SETNAME", "broadcast"),  # a command name with a space is split, as redis-py does
        (b"SET", b"k", b"v"),
    ],
)
def test_packs_the_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    assert b"".join(COMMAND_PACKER.pack(*args)) == b"".join(REFERENCE.pack(*args))


@pytest.mark.parametrize("bad", [True, None, object()])
def test_an_argument_redis_py_refuses_is_still_refused(bad: object) -> None:
    with pytest.raises(redis.DataError):
        COMMAND_PACKER.pack("SET", "k", bad)


def test_a_lone_surrogate_is_refused_as_redis_py_does() -> None:
    with pytest.raises(UnicodeEncodeError):
        COMMAND_PACKER.pack("SET", "k", "\ud800")


def test_the_product_client_answers_the_same_through_it(redis_url: str) -> None:
    client = new_redis_client(redis_url, Settings(env="dev"))
    key = f"pack:{uuid.uuid4().hex}"
    try:
        pipe = client.pipeline()
        pipe.hset(key, mapping={"f": 1.5, "g": "中文", "h": b"raw"})
        pipe.hgetall(key)
        assert pipe.execute()[1] == {"f": "1.5", "g": "中文", "h": "raw"}
        assert client.eval("return {ARGV[1], ARGV[2]}", 0, 7, "x y") == ["7", "x y"]
        client.client_setname("pack-test")  # CLIENT SETNAME: the fallback path
        assert client.client_getname() == "pack-test"
    finally:
        client.delete(key)
        client.close()


def test_a_script_on_the_product_client_reloads_after_noscript_and_never_reruns_an_unanswered_one(
    redis_url: str,
) -> None:
    """The send path's scripts skip redis-py's per-command layers (LuaScript._direct): NOSCRIPT still loads
    the script, and a script whose answer did not come in time is raised once, never silently run again
    (the caller decides: a send's scripts carry call ids); the next call works on a new connection."""
    client = new_redis_client(redis_url, Settings(env="dev"))
    client.connection_pool.connection_kwargs["socket_timeout"] = 0.2  # before its first connection
    key = f"direct:{uuid.uuid4().hex}"
    script = register(client, "touch")  # any script: only its round trip matters here
    script._script = client.register_script(
        "local n = redis.call('INCR', KEYS[1]) "
        "if ARGV[1] == 'slow' then local t = redis.call('TIME') local until_us = t[1] * 1e6 + t[2] + 400000 "
        "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= until_us end "
        "return n"
    )
    try:
        assert script(keys=[key], args=["fast"]) == 1
        client.script_flush()
        assert script(keys=[key], args=["fast"]) == 2  # NOSCRIPT: loaded and run once
        with pytest.raises(redis.TimeoutError):
            script(keys=[key], args=["slow"])  # it ran; its answer came after the client gave up
        time.sleep(0.5)
        assert client.get(key) == "3"  # run once, not again
        assert script(keys=[key], args=["fast"]) == 4
    finally:
        client.delete(key)
        client.close()


def test_a_round_trip_answers_each_command_and_an_error_in_its_place(redis_url: str) -> None:
    """A session's first round trip (scripts.round_trip): replies as Redis gives them, a command Redis
    refuses answered by its error in its place (the others still read), NOSCRIPT included."""
    client = new_redis_client(redis_url, Settings(env="dev"))
    key = f"rt:{uuid.uuid4().hex}"
    try:
        client.hset(key, mapping={"a": "1", "b": "中文"})
        hashed, clock, wrong, missing, echoed = round_trip(
            client,
            [("HGETALL", key), ("TIME",), ("LRANGE", key, 0, -1), ("EVALSHA", "0" * 40, 0), ("ECHO", "still read")],
        )
        assert hash_reply(hashed) == {"a": "1", "b": "中文"}  # RESP3 (redis-py's default): a map
        assert len(clock) == 2 and int(clock[0]) > 1_700_000_000
        assert isinstance(wrong, redis.ResponseError) and "WRONGTYPE" in str(wrong)
        assert isinstance(missing, redis.exceptions.NoScriptError)
        assert echoed == "still read"
        assert client.ping()  # the connection went back to the pool in a clean state
    finally:
        client.delete(key)
        client.close()


def test_script_calls_from_many_threads_share_round_trips_and_each_gets_its_own_answer(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit (SharedRoundTrips): 40 threads x 50 commands each get exactly their own reply, in fewer
    round trips than commands, and the lead passes on without a caller left waiting."""
    client = new_redis_client(redis_url, Settings(env="dev"))
    shared = SharedRoundTrips(client)
    trips: list[int] = []
    real = scripts.round_trip
    monkeypatch.setattr(
        scripts, "round_trip", lambda c, commands, **kw: trips.append(len(commands)) or real(c, commands, **kw)
    )
    wrong: list[str] = []

    def caller(t: int) -> None:
        for i in range(50):
            got = shared.call(("ECHO", f"{t}:{i}"))
            if got != f"{t}:{i}":
                wrong.append(f"{t}:{i} got {got!r}")

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert not any(thread.is_alive() for thread in threads)
        assert wrong == [] and sum(trips) == 40 * 50
        assert len(trips) < 40 * 50 and max(trips) > 1
        assert shared.call(("ECHO", "alone")) == "alone" and trips[-1] == 1  # alone: a round trip of its own
    finally:
        client.close()


def test_a_shared_round_trip_that_fails_raises_for_every_command_in_it(redis_url: str) -> None:
    """An answer that did not come in time fails every command of that round trip not answered yet (each
    caller decides what to do: the send path's scripts carry call ids), never runs them again, and the next
    call works; an error Redis answers for one command is that command's alone."""
    client = new_redis_client(redis_url, Settings(env="dev"))
    client.connection_pool.connection_kwargs["socket_timeout"] = 0.2  # before its first connection
    shared = SharedRoundTrips(client)
    key = f"shared:{uuid.uuid4().hex}"
    slow = (
        "local n = redis.call('INCR', KEYS[1]) local t = redis.call('TIME') local until_us = t[1] * 1e6 + t[2]"
        " + 400000 repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= until_us return n"
    )
    waiting = [scripts._Waiting(("EVAL", slow, 1, key)), scripts._Waiting(("ECHO", "behind it"))]
    try:
        shared._send(waiting, waiting[0])
        assert all(isinstance(w.error, redis.TimeoutError) for w in waiting)
        # the waiting caller is woken; the leader's own (waiting[0]) is not: it is no one's to wake
        assert waiting[1].done.acquire(blocking=False) and not waiting[0].done.acquire(blocking=False)
        time.sleep(0.5)
        assert client.get(key) == "1"  # ran once, not again
        assert shared.call(("ECHO", "next")) == "next"
        refused = shared.call(("LPUSH",))
        assert isinstance(refused, redis.ResponseError) and shared.call(("ECHO", "after")) == "after"
    finally:
        client.delete(key)
        client.close()


def test_answers_read_before_a_shared_round_trip_broke_still_count(redis_url: str) -> None:
    """The connection closes part-way through a round trip (here it is killed by a command of the round trip
    itself, after its answer): the commands answered before keep their answers, the others fail."""
    client = new_redis_client(redis_url, Settings(env="dev"))
    shared = SharedRoundTrips(client)
    try:
        own = shared.call(("CLIENT", "ID"))  # the connection the next round trip takes (one thread: the same)
        waiting = [
            scripts._Waiting(("ECHO", "before it")),
            scripts._Waiting(("CLIENT", "KILL", "ID", own, "SKIPME", "no")),
            scripts._Waiting(("ECHO", "behind it")),
        ]
        shared._send(waiting, waiting[0])
        assert (waiting[0].reply, waiting[0].error) == ("before it", None)
        assert isinstance(waiting[2].error, redis.ConnectionError)
        assert shared.call(("ECHO", "next")) == "next"  # on a new connection
    finally:
        client.close()
