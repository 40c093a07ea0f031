"""Who may call what: every route's role (and, for a change, its audit action), in one table.

``authorize`` (:mod:`scheduler.api.state`) looks the matched route up here. A route missing from the
table answers 403 to everyone but an admin (fail closed), and ``tests/scheduler/api/test_roles.py`` fails on it: a
new route is added together with its line here. Roles include each other (viewer < operator < admin);
``docs/api.md`` ("Keys and roles") prints this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.store.operators import Role

VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN


@dataclass(frozen=True, slots=True)
class Rule:
    """The least role a route needs; ``action``, for a route that changes state, is its audit name."""

    role: Role
    action: str = ""


#: Routes anyone may call (no key): probes, the console page, the API's own documentation.
PUBLIC: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/metrics"),  # no role, but a valid key unless BROADCAST_METRICS_PUBLIC (routers/ops.py)
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
        ("GET", "/console"),
        ("GET", "/console/"),
        ("GET", "/"),  # a redirect to /console
        ("GET", "/favicon.ico"),
    }
)

#: POST routes that store nothing (a dry run): no audit action, like a read.
DRY_RUNS: frozenset[tuple[str, str]] = frozenset({("POST", "/v1/messages/check"), ("POST", "/v1/audiences/preview")})
#: Routes that carry their own credential instead of a bearer key: a vendor's callback, whose per-account
#: key in the URL is checked by the route itself (wrong key: 404; issue 19). Never under ``authorize``.
OWN_KEY: frozenset[tuple[str, str]] = frozenset({("POST", "/v1/callbacks/{account}")})
#: Their path prefix: AuthFirst lets these through without a bearer key.
OWN_KEY_PREFIX = "/v1/callbacks/"

#: (method, path template) -> rule. Reads are ``viewer``; sending work is ``operator``; what holds vendor
#: tokens, limits every account shares, or hands out keys is ``admin``.
RULES: dict[tuple[str, str], Rule] = {
    # accounts: tokens live here. Pausing is the operator's brake; anything else is an admin's
    ("GET", "/v1/accounts"): Rule(VIEWER),
    ("GET", "/v1/accounts/{account_id}"): Rule(VIEWER),
    ("PUT", "/v1/accounts/{account_id}"): Rule(ADMIN, "account.put"),
    ("PATCH", "/v1/accounts/{account_id}"): Rule(ADMIN, "account.patch"),
    ("POST", "/v1/accounts/{account_id}/pause"): Rule(OPERATOR, "account.pause"),
    ("POST", "/v1/accounts/{account_id}/resume"): Rule(ADMIN, "account.resume"),
    # a new callback key (a credential) and, optionally, the vendor's callback setting
    ("POST", "/v1/accounts/{account_id}/callback"): Rule(ADMIN, "account.callback"),
    # what callbacks asked for past their hourly cap (held opt-outs, removed contacts): read, or applied as
    # the suppressions they asked for (an operator's call, like adding a suppression)
    ("GET", "/v1/accounts/{account_id}/callback/held"): Rule(VIEWER),
    ("POST", "/v1/accounts/{account_id}/callback/held/apply"): Rule(OPERATOR, "suppression.apply_held"),
    ("PUT", "/v1/vendor-limits/{vendor}"): Rule(ADMIN, "vendor_limits.put"),
    ("GET", "/v1/vendor-limits"): Rule(VIEWER),
    # contacts and audiences: reading them is a viewer's; a sync is vendor traffic on the account
    ("POST", "/v1/accounts/{account_id}/contacts/sync"): Rule(OPERATOR, "contacts.sync"),
    ("GET", "/v1/accounts/{account_id}/contacts/sync"): Rule(VIEWER),
    ("DELETE", "/v1/accounts/{account_id}/contacts/sync"): Rule(OPERATOR, "contacts.sync_cancel"),
    ("POST", "/v1/accounts/{account_id}/contacts/sync/cancel"): Rule(OPERATOR, "contacts.sync_cancel"),
    ("GET", "/v1/accounts/{account_id}/contacts"): Rule(VIEWER),
    ("GET", "/v1/accounts/{account_id}/labels"): Rule(VIEWER),
    ("POST", "/v1/audiences/preview"): Rule(VIEWER),  # a dry run: nothing is stored
    # messages
    ("POST", "/v1/messages"): Rule(OPERATOR, "message.create"),
    ("POST", "/v1/messages/check"): Rule(VIEWER),  # a dry run: nothing is stored
    ("GET", "/v1/messages/{job_id}"): Rule(VIEWER),
    ("POST", "/v1/messages/{job_id}/revoke"): Rule(OPERATOR, "message.revoke"),
    ("POST", "/v1/messages/{job_id}/cancel"): Rule(OPERATOR, "message.cancel"),
    # campaigns
    ("POST", "/v1/campaigns"): Rule(OPERATOR, "campaign.create"),
    ("POST", "/v1/campaigns/upload"): Rule(OPERATOR, "campaign.create"),
    ("GET", "/v1/campaigns"): Rule(VIEWER),
    ("GET", "/v1/campaigns/{campaign_id}"): Rule(VIEWER),
    ("GET", "/v1/campaigns/{campaign_id}/deliveries"): Rule(VIEWER),
    ("GET", "/v1/campaigns/{campaign_id}/timeline"): Rule(VIEWER),
    ("POST", "/v1/campaigns/{campaign_id}/pause"): Rule(OPERATOR, "campaign.pause"),
    ("POST", "/v1/campaigns/{campaign_id}/resume"): Rule(OPERATOR, "campaign.resume"),
    ("POST", "/v1/campaigns/{campaign_id}/cancel"): Rule(OPERATOR, "campaign.cancel"),
    ("POST", "/v1/campaigns/{campaign_id}/test"): Rule(OPERATOR, "campaign.test"),
    ("POST", "/v1/campaigns/{campaign_id}/start"): Rule(OPERATOR, "campaign.start"),
    ("POST", "/v1/campaigns/{campaign_id}/recall"): Rule(OPERATOR, "campaign.recall"),
    # dead letters
    ("GET", "/v1/dead-letters"): Rule(VIEWER),
    ("GET", "/v1/dead-letters/{job_id}"): Rule(VIEWER),
    ("POST", "/v1/dead-letters/{job_id}/replay"): Rule(OPERATOR, "dead_letter.replay"),
    ("POST", "/v1/dead-letters/replay"): Rule(OPERATOR, "dead_letter.replay_bulk"),
    ("DELETE", "/v1/dead-letters/{job_id}"): Rule(OPERATOR, "dead_letter.delete"),
    # schedules
    ("POST", "/v1/schedules"): Rule(OPERATOR, "schedule.create"),
    ("GET", "/v1/schedules"): Rule(VIEWER),
    ("GET", "/v1/schedules/{schedule_id}"): Rule(VIEWER),
    ("POST", "/v1/schedules/{schedule_id}/pause"): Rule(OPERATOR, "schedule.pause"),
    ("POST", "/v1/schedules/{schedule_id}/resume"): Rule(OPERATOR, "schedule.resume"),
    ("DELETE", "/v1/schedules/{schedule_id}"): Rule(OPERATOR, "schedule.delete"),
    # the suppression list (issue 19): who is never messaged is an operator's call
    ("POST", "/v1/suppressions"): Rule(OPERATOR, "suppression.add"),
    ("GET", "/v1/suppressions"): Rule(VIEWER),
    ("DELETE", "/v1/suppressions/{account}/{to}"): Rule(OPERATOR, "suppression.remove"),
    ("POST", "/v1/suppressions/import"): Rule(OPERATOR, "suppression.import"),
    ("GET", "/v1/suppressions/export"): Rule(VIEWER),
    # keys and the audit trail
    ("POST", "/v1/keys"): Rule(ADMIN, "key.create"),
    ("GET", "/v1/keys"): Rule(ADMIN),
    ("GET", "/v1/keys/me"): Rule(VIEWER),
    ("DELETE", "/v1/keys/{name}"): Rule(ADMIN, "key.revoke"),
    ("GET", "/v1/audit"): Rule(VIEWER),
    # the console's pictures
    ("GET", "/v1/stats/fleet"): Rule(VIEWER),
}

#: What an undeclared route needs: only an admin, so a forgotten line never opens a route.
UNDECLARED = Rule(ADMIN)


def rule_for(method: str, path: str) -> Rule:
    """The rule of a matched route (``path`` is its template, ``/v1/campaigns/{campaign_id}``)."""
    return RULES.get((method, path), UNDECLARED)


def _template(path: str) -> re.Pattern[str]:
    """``/v1/campaigns/{campaign_id}`` → a pattern with a named group per parameter."""
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")


_PATTERNS = [(method, _template(path), rule) for (method, path), rule in RULES.items()]


def rule_at_door(method: str, path: str) -> tuple[Rule, dict[str, str]] | None:
    """The rule (and path parameters) of the declared route a raw request path matches, for a check at
    the door, before FastAPI has matched the route and read the body; None when none matches. Where two
    templates match (``/v1/campaigns/upload`` and ``/v1/campaigns/{campaign_id}``) the one needing the
    lesser role counts: the door may let a call through that :func:`rule_for` then refuses, never the
    other way round."""
    found = [
        (rule, m.groupdict()) for meth, pattern, rule in _PATTERNS if meth == method and (m := pattern.match(path))
    ]
    return min(found, key=lambda f: f[0].role.rank) if found else None
