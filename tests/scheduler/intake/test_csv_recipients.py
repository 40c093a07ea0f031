"""Recipient CSVs are read strictly where a mistake would send the wrong text to someone."""

import pytest

from scheduler.intake.campaigns import recipients_from_csv
from worker.errors import MessageError


def read(text: str) -> list[dict[str, object]]:
    return list(recipients_from_csv(text.splitlines(keepends=True)))


def test_columns_become_variables_and_unnamed_columns_are_ignored() -> None:
    assert read("to,name,\nwxid_a,Ann,\n") == [{"to": "wxid_a", "account": None, "vars": {"name": "Ann"}}]


def test_a_column_named_twice_is_refused() -> None:
    with pytest.raises(MessageError, match="column 'name' appears twice"):
        read("to,name,name\nwxid_a,Ann,Bob\n")


def test_a_row_with_more_cells_than_the_header_is_refused_with_its_line() -> None:
    with pytest.raises(MessageError, match="line 3 has more cells"):
        read("to,name\nwxid_a,Ann\nwxid_b,Bob,extra\n")
