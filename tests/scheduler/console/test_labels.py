"""Every audit action the API or a vendor callback records has a label in the console (no raw code alone)."""

from __future__ import annotations

import json
import re

from scheduler.api.roles import RULES
from tests.procs import ROOT
from worker.store.operators import Role

LABELS = ROOT / "scheduler" / "console" / "static" / "audit_actions.json"
#: Actions recorded with a variant (scheduler/api/state.py ``audit_variant``), by a vendor callback
#: (scheduler/intake/callbacks.py) or by the worker itself (worker/execution/runner.py, worker/execution/offline.py,
#: prelude_finish.lua).
VARIANTS = {
    *(f"key.create_{role.value}" for role in Role),
    "dead_letter.replay_force",
    "dead_letter.replay_bulk_force",
    "message.create_ignore_suppression",
    "suppression.add_opted_out",
    "suppression.add_contact_removed",
    "account.down",
    "callback.over_cap",
    "callback.offline_refuted",
    "callback.offline_unconfirmed",
    "suppression.import_attributed",
    "account.auto_pause",
    "campaign.auto_pause",
    "suppression.add_not_friend",
    "campaign.create_replayed",
    "message.create_replayed",
    "message.create_ignore_suppression_replayed",
}


def labelled_actions() -> dict[str, tuple[str, str]]:
    """The one table the console and the CLI read."""
    return {code: (zh, en) for code, (zh, en) in json.loads(LABELS.read_text(encoding="utf-8")).items()}


def test_every_audit_action_has_a_chinese_and_an_english_label() -> None:
    labels = labelled_actions()
    recorded = {rule.action for rule in RULES.values() if rule.action} | VARIANTS
    assert recorded <= set(labels), sorted(recorded - set(labels))
    for code, (zh, en) in labels.items():
        assert re.search(r"[\u4e00-\u9fff]", zh) and en[:1].isupper() and not re.search(r"[\u4e00-\u9fff]", en), code
