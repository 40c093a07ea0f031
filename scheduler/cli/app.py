"""The ``broadcast`` command: every process of the product, and the operator's commands.

Process commands: ``api``, ``worker``, ``scheduler``, ``simulator``, ``flower``, ``dev``, ``demo``.

Operator commands (``send``, ``message``, ``campaign``, ``dead-letters``, ``accounts``, ``schedules``, ``suppressions``) talk
only to the HTTP API through :mod:`scheduler.cli.client`, so they run from any machine that reaches it:
``--url`` or ``BROADCAST_API_URL``, ``--token`` or ``BROADCAST_API_TOKEN`` (prefer the variable: a value
on the command line lands in shell history). Tables by default, ``--json`` for scripts; ids are always
printed whole, whatever the terminal width, because operators copy them into the next command.

Exit codes: 0 done; 1 failed (API unreachable, server error, some id not replayed or deleted); 2 the input
was refused (the API's 4xx, naming the field, or a bad option); 3 finished but not everything was sent
(``send --wait``, ``campaign watch``); 4 a wait ran out of ``--timeout`` (the work goes on); 130 interrupted.

This module only assembles the command: each noun lives in its own module (``message``, ``campaign``,
``deadletter``, ``account``, ``schedule``), the processes in ``services``, shared output in ``render`` and
shared options in ``options``.
"""

from __future__ import annotations

import sys

import typer

from scheduler.cli import account, campaign, contacts, deadletter, keys, message, schedule, services, suppression
from scheduler.cli.client import TOKEN_ENV, URL_ENV
from scheduler.cli.render import plain_help_types
from worker.settings import SettingsError

plain_help_types()

app = typer.Typer(
    help="wechat-broadcast: paced, crash-safe WeChat broadcasts through protocol vendors / 微信群发：限速、防重、可追溯。",
    no_args_is_help=True,
    epilog=f"Operator commands talk to the HTTP API: --url / {URL_ENV}, --token / {TOKEN_ENV}. "
    "Exit codes: 0 ok, 1 failed, 2 input refused, 3 finished with messages not sent, 4 timed out waiting.",
)

# processes (help lists commands in this order, then the nouns)
app.command()(services.api)
app.command(context_settings=services.PASS_THROUGH)(services.worker)
app.command(context_settings=services.PASS_THROUGH)(services.flower)
app.command()(services.scheduler)
app.command()(services.simulator)
app.command()(services.dev)
app.command()(services.demo)

# operator commands
app.command()(message.send)
app.command("job", hidden=True)(message.job_alias)
app.add_typer(message.app, name="message")
app.add_typer(campaign.app, name="campaign")
app.add_typer(deadletter.app, name="dead-letters")
app.add_typer(account.app, name="accounts")
app.add_typer(contacts.app, name="contacts")
app.add_typer(schedule.app, name="schedules")
app.add_typer(keys.app, name="keys")
app.command()(keys.audit)
app.add_typer(suppression.app, name="suppressions")


def main() -> None:
    """The ``broadcast`` command (and ``python -m scheduler.cli.app``): a setting that does not parse is
    said in one line per variable, exit code 2, not a traceback."""
    try:
        app()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
    sys.exit(0)
