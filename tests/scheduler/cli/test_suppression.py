"""``broadcast suppressions``: an export imported again keeps every entry's ``at``, ``by`` and ``note``, and
``held`` / ``apply-held`` show and apply what an account's callbacks asked for past their hourly cap. The
real CLI as subprocesses against a real ``broadcast api`` process."""

from __future__ import annotations

import json
from pathlib import Path

from scheduler.intake.callbacks import HeldChanges
from tests.conftest import ApiStack
from tests.scheduler.cli.test_ops import cli_runner
from worker.store.suppressions import Suppressions


def test_export_then_import_keeps_each_entry_and_held_changes_are_listed_and_applied(
    api: ApiStack, tmp_path: Path
) -> None:
    stack = api
    run = cli_runner(stack)
    stack.add_account("cl", "gewe")
    store = Suppressions(stack.redis, stack.prefix)
    store.add("cl", "wxid_a", "opted_out", by="callback", note="replied TD", at=1733300000.25)
    store.add("cl", "wxid_b", "manual", by="alice", note="@SUM(1+1)", at=1733300001.0)
    before = sorted((e.to, e.reason, e.at, e.by, e.note) for e in store.all(account="cl"))
    exported = tmp_path / "s.csv"
    assert run("suppressions", "export", "--account", "cl", "-o", str(exported)).returncode == 0
    stack.redis.delete(stack.ledger.keys.suppressions("cl"))
    done = run("suppressions", "import", str(exported))
    assert done.returncode == 0 and "imported 2" in done.stdout, done.stdout + done.stderr
    assert sorted((e.to, e.reason, e.at, e.by, e.note) for e in store.all(account="cl")) == before
    as_lines = tmp_path / "s.jsonl"
    assert run("suppressions", "export", "--account", "cl", "--format", "jsonl", "-o", str(as_lines)).returncode == 0
    stack.redis.delete(stack.ledger.keys.suppressions("cl"))
    done = run("suppressions", "import", str(as_lines))
    assert done.returncode == 0 and "imported 2" in done.stdout, done.stdout + done.stderr
    assert sorted((e.to, e.reason, e.at, e.by, e.note) for e in store.all(account="cl")) == before

    held = HeldChanges(stack.redis, stack.prefix)
    for n in range(3):
        held.hold(
            "cl", reason="opted_out", who=f"wxid_h{n}", note="replied 退订", digest="ab" * 32, at=1733300100.0 + n
        )
    shown = run("suppressions", "held", "--account", "cl", "--json")
    assert shown.returncode == 0, shown.stderr
    assert [h["from"] for h in json.loads(shown.stdout)] == ["wxid_h0", "wxid_h1", "wxid_h2"]
    table = run("suppressions", "held", "--account", "cl")
    assert "wxid_h1" in table.stdout and "3 shown of 3 held" in table.stdout, table.stdout
    applied = run("suppressions", "apply-held", "--account", "cl", "--json")
    assert json.loads(applied.stdout) == {"applied": 3, "already_suppressed": 0, "remaining": 0}, applied.stderr
    entry = store.get("cl", "wxid_h2")
    assert entry is not None and (entry.by, entry.at) == ("callback", 1733300102.0)
