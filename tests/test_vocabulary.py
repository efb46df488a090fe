"""The vocabulary (storage/vocabulary.py) and the schema's CHECK constraints say the same thing:
the lists are written twice (SQLite cannot read Python), so this test reads the migrated schema
as SQLite holds it and compares every closed list with its vocabulary."""

from __future__ import annotations

import re

import pytest
from sqlite_utils import Database

from storage import vocabulary as v
from storage.db import migrate

CHECKED = [
    ("corrections", "kind", v.KINDS),
    ("corrections", "choice", v.CHOICES),
    ("corrections", "rating", v.RATINGS),
    ("reviews", "verdict", v.VERDICTS),
    ("gold", "verdict", v.VERDICTS),
    ("deals", "verdict", v.VERDICTS),
    ("campaigns", "task", v.TASKS),
    ("campaigns", "round_policy", v.ROUND_POLICIES),
    ("campaigns", "training_mode", v.TRAINING_MODES),
    ("campaigns", "points_rule", v.POINTS_RULES),
    ("campaigns", "merge_method", v.MERGE_METHODS),
    ("campaigns", "judge", v.JUDGES),
    ("model_versions", "kind", v.CANDIDATE_KINDS),
]


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict[str, str]:
    """table -> its CREATE TABLE statement, as SQLite stores it after every migration (columns
    added by ALTER TABLE included)."""
    path = tmp_path_factory.mktemp("vocabulary") / "crowd.db"
    migrate(path)
    db = Database(path)
    return {row["name"]: row["sql"] for row in db.query("SELECT name, sql FROM sqlite_master")}


def allowed(table_sql: str, column: str) -> tuple[str | int, ...]:
    """The values `CHECK (column IN (...))` allows in one CREATE TABLE statement."""
    found = re.findall(rf"CHECK \({column} IN \(([^)]*)\)\)", table_sql)
    assert len(found) == 1, f"expected one CHECK on {column}, found {len(found)}"
    values = [value.strip() for value in found[0].split(",")]
    return tuple(value.strip("'") if value.startswith("'") else int(value) for value in values)


@pytest.mark.parametrize(("table", "column", "words"), CHECKED)
def test_the_schema_checks_the_vocabulary(schema, table, column, words):
    assert allowed(schema[table], column) == tuple(words)


def test_every_word_list_covers_its_vocabulary():
    """The words shown for kinds and picks name each value once, in the vocabulary's order (the
    pick buttons are drawn in this order)."""
    assert tuple(v.KIND_WORDS) == v.KINDS
    assert tuple(v.CHOICE_WORDS) == v.CHOICES
    assert tuple(v.CHOICE_BUTTONS) == v.CHOICES
