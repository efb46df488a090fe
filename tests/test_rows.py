"""The row shapes (storage/rows.py) and the schema say the same thing: each table's TypedDict
has exactly the table's columns as the migrations leave them, and a column may be NULL in
SQLite exactly where its type admits None, so mypy's view of a row is SQLite's."""

from __future__ import annotations

import types
from typing import get_type_hints

import pytest
from sqlite_utils import Database

from storage.db import migrate
from storage.rows import TABLE_SHAPES


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Database:
    path = tmp_path_factory.mktemp("rows") / "crowd.db"
    migrate(path)
    return Database(path)


def _admits_none(hint: object) -> bool:
    return isinstance(hint, types.UnionType) and type(None) in hint.__args__


@pytest.mark.parametrize("table", sorted(TABLE_SHAPES))
def test_a_row_shape_is_its_tables_columns(db, table):
    hints = get_type_hints(TABLE_SHAPES[table])
    columns = {c.name: c for c in db.table(table).columns}
    assert set(hints) == set(columns)
    # The integer primary key is never NULL in a stored row, though SQLite declares it nullable.
    nullable = {name for name, c in columns.items() if not c.notnull and not c.is_pk}
    assert {name for name, hint in hints.items() if _admits_none(hint)} == nullable
