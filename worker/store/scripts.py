"""The Lua scripts that move jobs between states, atomically, and their loader.

Every state change happens inside one script, together with the queue/set/counter writes it implies, so
a crash between two Redis calls can never leave a job half-moved, and campaign counts always add up to
the campaign's total (each transition decrements the old state's counter and increments the new one).

The scripts live in ``worker/store/lua/*.lua`` (package data), each opening with a comment that lists its
KEYS, ARGV (by position) and reply, as BullMQ's ``src/commands/*.lua`` do. A script with a
``--!include prelude`` line (after that comment) gets the shared helpers of ``prelude.lua`` (a FINISH also
``--!include prelude_finish``, the helpers only the finish scripts use); every script
gets ``p`` (the key prefix, ``ARGV[1]``), a ``key_<name>(...)`` function for each key it uses, generated
from :data:`worker.store.keys.LAYOUT`, and the :data:`SHARED` numbers it names. A job state, outcome,
reason or campaign status is named as ``STATE.SENDING``, ``DEAD_REASON.UNKNOWN_OUTCOME``... and spelled
out from its Python enum (:data:`worker.store.vocabulary.LUA_TABLES`) as the script is composed
(:func:`spell`). Errors Redis raises name the ``.lua`` file and line. They build key names from the
prefix: this product runs on one Redis (or a Sentinel-managed primary), not Redis Cluster.

Crash safety rests on two facts. A job is ``sending`` only between ``begin.lua`` and a ``finish_*.lua``; and
every job a batch holds is listed in ``claimed:{account}`` under a lease with a TTL. When a lease dies
(worker SIGKILLed), ``recover.lua`` puts the untouched jobs back at the head of their queue and turns the
``sending`` one into an *unknown outcome* for review: it may have reached WeChat, so it is never resent
blindly. A late ``FINISH`` that brings a success for such a job still records its ids.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import redis

from worker.store.keys import LAYOUT
from worker.store.replication import Acks, confirmed
from worker.store.vocabulary import LUA_TABLES

#: Numbers Python and the scripts both use, defined once; a script that names one gets ``local NAME = value``.
SHARED: Final[dict[str, float]] = {
    #: the slowest vendor-wide rate accepted (sends per second): its gap is 1 / MIN_VENDOR_RATE seconds
    "MIN_VENDOR_RATE": 0.2,
    #: how long a vendor's recent sends are kept: the longest gap a vendor-wide rate can ask for, plus 1 s
    "VENDOR_WINDOW_S": 6.0,
    #: how long the console's per-minute counts (``minutes:{hour}``) stay when jobs are kept forever
    "CHART_KEEP_S": 30 * 86400,
    #: how long a sequence holds its recipient at most between two parts (part.lua; renewed at each part)
    "SEQUENCE_LOCK_S": 600.0,
}

_INCLUDE = re.compile(r"^--!include (\w+)\n", re.MULTILINE)
_KEY_CALL = re.compile(r"\bkey_(\w+)\(")
_SCRIPT_LINE = re.compile(r"user_script:(\d+)")
_TABLE_REF = re.compile(rf"\b({'|'.join(LUA_TABLES)})\.(\w+)")


def spell(code: str, file: str = "<lua>") -> str:
    """``code`` with each ``NAME.MEMBER`` of :data:`worker.store.vocabulary.LUA_TABLES` replaced by the
    enum member's value as a Lua string (``STATE.SENDING`` -> ``'sending'``): folded here, so it costs the
    script nothing at run time, and on the same line, so error lines stay right. A member the enum lacks
    is refused (ValueError naming ``file``)."""
    missing = sorted({f"{t}.{m}" for t, m in _TABLE_REF.findall(code) if m not in LUA_TABLES[t].__members__})
    if missing:
        raise ValueError(f"{file}: {', '.join(missing)} not in worker/store/vocabulary.py")
    return _TABLE_REF.sub(lambda m: f"'{LUA_TABLES[m.group(1)][m.group(2)].value}'", code)


def _lua_key_function(name: str, template: str) -> str:
    pieces = template.split("{}")
    args = [f"a{i}" for i in range(1, len(pieces))]
    expr = "p .. ':" + pieces[0].replace("'", "") + "'"
    for arg, piece in zip(args, pieces[1:], strict=True):
        expr += f" .. {arg}" + (f" .. '{piece}'" if piece else "")
    return f"local function key_{name}({', '.join(args)}) return {expr} end"


@dataclass(frozen=True, slots=True)
class Source:
    """A script as sent to Redis, and where each of its lines comes from (for readable errors)."""

    name: str
    text: str
    #: (first line in ``text``, file, its line there), in order
    parts: tuple[tuple[int, str, int], ...]

    def where(self, line: int) -> str:
        """``file.lua:N`` for a line of :attr:`text`."""
        found = "<generated>", line
        for first, file, file_line in self.parts:
            if line >= first:
                found = file, file_line + line - first
        return f"{found[0]}:{found[1]}"

    def explain(self, message: str) -> str:
        """Redis's error message with ``user_script:N`` replaced by the file and line."""
        return _SCRIPT_LINE.sub(lambda m: self.where(int(m.group(1))), message)


def _read(file: str) -> str:
    return (resources.files("worker.store") / "lua" / file).read_text(encoding="utf-8")


@functools.cache
def source(name: str) -> Source:
    """The composed text of ``lua/<name>.lua``: generated header, prelude if included, the script."""
    file = f"{name}.lua"
    body = _read(file)
    chunks: list[tuple[str, str, int]] = []  # (text, file, first line of the text in that file)
    at = 0  # where the script's text not yet taken starts
    for include in _INCLUDE.finditer(body):  # each replaced by the file it names, in order
        if include.start() > at:  # the script's header comment, before its includes
            chunks.append((body[at : include.start()], file, body.count("\n", 0, at) + 1))
        chunks.append((_read(f"{include.group(1)}.lua"), f"{include.group(1)}.lua", 1))
        at = include.end()
    chunks.append((body[at:], file, body.count("\n", 0, at) + 1))
    code = "".join(text for text, _, _ in chunks)
    used = sorted(set(_KEY_CALL.findall(code)))
    unknown = [k for k in used if k not in LAYOUT]
    if unknown:
        raise ValueError(f"{file}: no key named {', '.join(unknown)} in worker/store/keys.py LAYOUT")
    chunks = [(spell(text, chunk_file), chunk_file, first) for text, chunk_file, first in chunks]
    header = ["local p = ARGV[1]"]
    header += [_lua_key_function(k, LAYOUT[k]) for k in used]
    header += [f"local {k} = {v:g}" for k, v in SHARED.items() if re.search(rf"\b{k}\b", code)]
    text = "\n".join(header) + "\n"
    parts: list[tuple[int, str, int]] = []
    line = len(header) + 1
    for chunk, chunk_file, first in chunks:
        if not chunk.endswith("\n"):
            chunk += "\n"
        parts.append((line, chunk_file, first))
        text += chunk
        line += chunk.count("\n")
    return Source(name, text, tuple(parts))


class LuaScript:
    """One registered script (EVALSHA, loaded on first use): called like redis-py's ``Script``; errors
    raised by Redis name the ``.lua`` file and line instead of ``user_script:N``.

    Since Redis 7.0 loaded scripts are not replicated: a promoted replica (a failover) or a restarted
    server answers NOSCRIPT, and both ways of calling reload the script and run it (redis-py's ``Script``
    does so for plain calls, :meth:`acked` itself)."""

    __slots__ = ("_client", "_script", "source")

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.source = source(name)
        self._client = client
        self._script = client.register_script(self.source.text)

    def __call__(self, keys: list[Any] | None = None, args: list[Any] | None = None, client: Any = None) -> Any:
        if client is None and type(self._client) is redis.Redis:
            return self._direct(keys or [], args or [])
        try:
            return self._script(keys=keys or [], args=args or [], client=client)
        except redis.ResponseError as exc:
            raise redis.ResponseError(self.source.explain(str(exc))) from exc

    def _direct(self, keys: list[Any], args: list[Any]) -> Any:
        """``EVALSHA`` in a :func:`round_trip` shared with the other threads' script calls of the moment
        (:class:`SharedRoundTrips`), without redis-py's per-command layers (its retry wrapper, command-name
        parsing and observability hooks cost about as much as the round trip's own Python): the hot path's
        scripts run many times a send. NOSCRIPT (a restarted server, a new primary)
        is handed to redis-py's own call, which loads the script."""
        reply = shared_round_trips(self._client).call(("EVALSHA", self._script.sha, len(keys), *keys, *args))
        if not isinstance(reply, redis.exceptions.NoScriptError):
            return self.answer(reply, args)
        try:
            return self._script(keys=keys, args=args)
        except redis.ResponseError as exc:
            raise redis.ResponseError(self.source.explain(str(exc))) from exc

    def load(self, pipe: Any) -> None:
        """Add a ``SCRIPT LOAD`` of this script to a pipeline (a warm-up: the first call finds it loaded)."""
        pipe.script_load(self.source.text)

    def command(self, args: list[Any]) -> tuple[Any, ...]:
        """The ``EVALSHA`` of this script for :func:`round_trip` (its reply goes through :meth:`answer`)."""
        return ("EVALSHA", self._script.sha, 0, *args)

    def answer(self, result: Any, args: list[Any]) -> Any:
        """The script's reply from :func:`round_trip` (or a pipeline with ``raise_on_error=False``): a server without the script
        (NOSCRIPT: a new primary, a restarted one) runs it again here, loading it; an error is raised with
        the ``.lua`` file and line."""
        if isinstance(result, redis.exceptions.NoScriptError):
            return self(args=args)
        if isinstance(result, redis.ResponseError):
            raise redis.ResponseError(self.source.explain(str(result))) from result
        if isinstance(result, Exception):
            raise result
        return result

    def acked(self, acks: Acks, args: list[Any]) -> tuple[Any, bool]:
        """Run the script, then ``WAIT``/``WAITAOF`` on the same connection (one round trip): its reply, and
        whether the write is where ``acks`` wants it (docs in worker/store/replication.py)."""
        if acks.none:
            return self(args=args), True
        for _ in range(3):
            pipe = self._client.pipeline(transaction=False)
            pipe.evalsha(self._script.sha, 0, *args)
            if acks.replicas > 0:
                pipe.wait(acks.replicas, acks.timeout_ms)
            if acks.aof_local:
                pipe.waitaof(acks.aof_local, 0, acks.timeout_ms)
            reply, *waits = pipe.execute(raise_on_error=False)
            if isinstance(reply, redis.exceptions.NoScriptError):  # a new primary, or a restarted one
                self._script.sha = self._client.script_load(self.source.text)
                continue  # run again with its WAIT, not alone as answer() would
            reply = self.answer(reply, args)
            for wait in waits:
                if isinstance(wait, Exception):
                    raise wait
            return reply, confirmed(acks, waits)
        raise redis.exceptions.NoScriptError(f"{self.source.name}.lua: NOSCRIPT after reloading it")


def round_trip(client: redis.Redis, commands: list[tuple[Any, ...]], *, into: list[Any] | None = None) -> list[Any]:
    """Several commands in one round trip, each reply or the error Redis answered for it (a
    ``ResponseError``, NOSCRIPT included), never raised. On the product's clients it skips redis-py's pipeline
    layers (command stack, observability), and replies come as the connection's protocol gives them (RESP3,
    redis-py's default: ``HGETALL`` a map, ``TIME`` two strings; RESP2: a flat list); another client's
    pipeline applies redis-py's reply callbacks: callers read all. A dropped connection or a timeout drops the
    connection and is raised, as redis-py does with the product's pools (they never retry: the callers
    decide, a send's scripts by their call ids); a client that retries gets redis-py's pipeline, which does.
    ``into``: the replies are added to it as they are read, so a caller whose round trip failed part-way
    knows which commands were answered (on the product's clients)."""
    if type(client) is redis.Redis:
        pool = client.connection_pool
        conn: Any = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
            replies: list[Any] = into if into is not None else []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as error:
                    replies.append(error)
            return replies
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()
            if not conn.retry.get_retries():
                raise
        except BaseException:
            conn.disconnect()  # a reply may be left unread on it
            raise
        finally:
            pool.release(conn)
    pipe: Any = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    answers = list(pipe.execute(raise_on_error=False))
    if into is not None:
        into.extend(answers)
    return answers


class _Waiting:
    """One command waiting in :class:`SharedRoundTrips`: its reply (or the error that lost it), and a lock its
    thread waits on until a leader answers it or hands it the lead."""

    __slots__ = ("command", "done", "error", "lead", "reply")

    def __init__(self, command: tuple[Any, ...]) -> None:
        self.command = command
        self.reply: Any = None
        self.error: BaseException | None = None
        self.lead = False
        self.done = threading.Lock()
        self.done.acquire()


class SharedRoundTrips:
    """Commands from many threads sent together (group commit): the first caller leads, sends what is
    waiting in one :func:`round_trip`, answers every caller, and sends again what came meanwhile; callers
    that arrive while a round trip is under way wait for the next one instead of each making their own.

    A worker process runs hundreds of sessions; each send's scripts were a round trip of its own, and each
    round trip costs a thread its pool checkout, a send, a wait for the reply and the hand-offs of the
    interpreter around them. Alone, a caller leads at once (the same round trip as before). A leader sends
    at most :data:`LEAD_ROUNDS` round trips, then hands the lead to a waiting caller, so its own session is
    not held up. A round trip that fails (a dropped connection, a timeout) raises the error for every
    command in it not answered yet, as it would have for each alone: the callers decide (the send path
    retries its scripts with their call ids, which answer the same when they ran)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._leading = False

    def call(self, command: tuple[Any, ...]) -> Any:
        """The reply to ``command``, or the error Redis answered for it (a ``ResponseError``, NOSCRIPT
        included), as :func:`round_trip` gives them; a failed round trip is raised."""
        mine = _Waiting(command)
        with self._lock:
            self._waiting.append(mine)
            follow = self._leading
            self._leading = True
        if follow:
            mine.done.acquire()  # answered, or handed the lead
        if not follow or mine.lead:
            self._lead(mine)
        if mine.error is not None:
            raise mine.error
        return mine.reply

    def _lead(self, mine: _Waiting) -> None:
        rounds = 0
        while True:
            with self._lock:
                batch, self._waiting = self._waiting, []
                if not batch:
                    self._leading = False
                    return
            self._send(batch, mine)
            rounds += 1
            if rounds >= LEAD_ROUNDS:
                with self._lock:
                    if not self._waiting:
                        self._leading = False
                        return
                    heir = self._waiting[0]  # stays waiting: its round trip is the next
                heir.lead = True
                heir.done.release()
                return

    def _send(self, batch: list[_Waiting], mine: _Waiting) -> None:
        answered: list[Any] = []
        try:
            round_trip(self.client, [w.command for w in batch], into=answered)
        except BaseException as error:  # noqa: BLE001 - given to each caller not answered, who raises it
            for w in batch[len(answered) :]:
                w.error = error
        for w, reply in zip(batch, answered, strict=False):  # an answer read before a failure still counts
            w.reply = reply
        for w in batch:
            if w is not mine:
                w.done.release()


#: Round trips a leader of :class:`SharedRoundTrips` sends before it hands the lead on.
LEAD_ROUNDS = 2

_shared: dict[int, SharedRoundTrips] = {}
_shared_lock = threading.Lock()


def shared_round_trips(client: redis.Redis) -> SharedRoundTrips:
    """The process's :class:`SharedRoundTrips` for ``client`` (one per client, made on first use)."""
    shared = _shared.get(id(client))
    if shared is None or shared.client is not client:
        with _shared_lock:
            shared = _shared.get(id(client))
            if shared is None or shared.client is not client:
                shared = _shared[id(client)] = SharedRoundTrips(client)
    return shared


def hash_reply(reply: Any) -> dict[str, str]:
    """A hash as :func:`round_trip` gives it: a map (RESP3), or a flat list (RESP2)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def register(client: redis.Redis, name: str) -> LuaScript:
    """The script ``lua/<name>.lua`` for this client."""
    return LuaScript(client, name)
