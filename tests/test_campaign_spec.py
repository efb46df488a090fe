"""One campaign spec (issue 31): the settings an organizer edits are declared once, in
`crowd.campaigns.CampaignSpec`, and everything else agrees with it. The schema cannot import
the spec (storage imports nothing from crowd), so its CHECK constraints and DEFAULTs are read
from a real migrated SQLite file and compared with the spec here; validation, the stored
defaults and the form's parsing are checked against the same declarations."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, fields

import pytest

from crowd.campaign_fields import PARTS
from crowd.campaigns import CampaignSpec, campaign_settings, create_campaign, validate_campaign
from crowd.limits import Refused
from crowd.ui.campaign_form import FORM_FIELDS, form_changes, form_values
from storage import rounds as store
from storage.db import connect, migrate

SETTINGS = campaign_settings()

WIDER_IN_SQL = {"heldout_share": "SQLite cannot narrow a CHECK without rebuilding the table"}
"""Settings whose CHECK allows more than the spec: the spec's range must lie inside it."""

UNCHECKED_CHOICES = {"target_emotion": "28 GoEmotions labels, checked by the spec alone"}
"""Choice settings without a CHECK in SQL."""

OLD_ROWS_DEFAULT = {
    "reviews_on": "m002 kept campaigns that existed then as they were: review off",
    "person_cap": "m002 kept campaigns that existed then as they were: no cap",
    "prompts": "m001's empty list; create_campaign always writes the spec's prompts",
    **dict.fromkeys(
        ("union_candidate", "union_continues", "memory_rounds", "merge_method", "judge"),
        "m028 kept campaigns that existed then as they were: one candidate per group, fixed judge",
    ),
}
"""Columns whose SQL DEFAULT differs from the spec's: it filled the rows that existed when the
column was added. A new campaign never uses it: `create_campaign` writes every spec field."""


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> tuple[str, dict[str, object]]:
    """The campaigns table of a real migrated database: (its CREATE TABLE text as SQLite keeps
    it, with every ALTER's column appended; column -> DEFAULT as SQL text)."""
    path = tmp_path_factory.mktemp("spec") / "crowd.db"
    migrate(path)
    with connect(path) as db:
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'campaigns'").fetchone()[0]
        defaults = {row[1]: row[4] for row in db.execute("PRAGMA table_info(campaigns)")}
    return sql, defaults


def checks(sql: str) -> dict[str, tuple]:
    """Column -> ('in', values) | ('between', low, high) | ('range', low, high, high_inclusive)
    for every CHECK in the table's text."""
    found: dict[str, tuple] = {}
    for match in re.finditer(r"CHECK \((\w+) IN \(([^)]*)\)\)", sql):
        found[match[1]] = ("in", tuple(v.strip(" '") for v in match[2].split(",")))
    for match in re.finditer(r"CHECK \((\w+) BETWEEN (\S+) AND (\S+)\)", sql):
        found[match[1]] = ("between", float(match[2]), float(match[3]))
    pattern = r"CHECK \((\w+) >= (\S+) AND \1 (<=?) ([^)\s]+)\)"
    for match in re.finditer(pattern, sql):
        found[match[1]] = ("range", float(match[2]), float(match[4]), match[3] == "<=")
    return found


def test_every_check_on_campaigns_is_read(schema):
    sql, _ = schema
    assert sql.count("CHECK") == len(checks(sql)) >= 9


def test_the_checks_agree_with_the_spec(schema):
    for column, check in checks(schema[0]).items():
        d = SETTINGS[column]
        if check[0] == "in":
            assert d.kind == "choice" and set(check[1]) == set(d.choices), column
        elif check[0] == "between":
            assert (d.kind, d.low, d.high) == ("int", check[1], check[2]), column
        else:
            assert column in WIDER_IN_SQL, f"{column}: make the CHECK a BETWEEN or explain"
            low, high, inclusive = check[1:]
            assert low <= d.low and (d.high <= high if inclusive else d.high < high), column


def test_every_choice_and_group_count_has_its_check(schema):
    checked = set(checks(schema[0]))
    choices = {name for name, d in SETTINGS.items() if d.kind == "choice"}
    assert choices - checked == set(UNCHECKED_CHOICES)
    assert "n_groups" in checked


def sql_literal(text: str) -> object:
    return json.loads(text.replace("'", '"')) if text.startswith("'") else float(text)


def stored(value: object) -> object:
    """A spec value as SQLite stores it: a flag as 0/1, a list as JSON text."""
    if isinstance(value, bool):
        return float(value)
    return json.dumps(value) if isinstance(value, list) else value


def test_every_setting_is_a_column_with_the_spec_default(schema):
    _, defaults = schema
    assert set(SETTINGS) <= set(defaults), "add the column in a migration"
    spec = asdict(CampaignSpec())
    for name in SETTINGS:
        if defaults[name] is None or name in OLD_ROWS_DEFAULT:
            continue
        default = stored(spec[name])
        assert sql_literal(defaults[name]) == (
            float(default) if isinstance(default, int | float) else default
        ), name
    for name in OLD_ROWS_DEFAULT:
        assert sql_literal(defaults[name]) != stored(spec[name]), f"{name} agrees now: unlist it"


def test_a_new_campaign_is_stored_with_every_default_of_the_spec(db_path, settings):
    with connect(db_path) as db:
        row = store.get_campaign(
            db, create_campaign(db, CampaignSpec(), None, settings.data_dir, "2026-01-01")
        )
    for name, value in asdict(CampaignSpec()).items():
        want = json.dumps(value) if isinstance(value, list) else value
        assert row[name] == want, name


def test_the_defaults_pass_their_own_validation():
    spec = asdict(CampaignSpec())
    assert validate_campaign(spec) == spec


@pytest.mark.parametrize("name", list(SETTINGS))
def test_each_setting_refuses_what_is_outside_its_declaration(name):
    d = SETTINGS[name]
    bad: list[object] = ["", True] if d.kind in ("int", "real") else [3]
    if d.kind in ("int", "real"):
        bad += [d.low - 1, d.high + 0.5, float("nan")]
    if d.kind == "int":
        bad.append(d.low + 0.5)
    if d.kind == "choice":
        bad.append("nonsense")
    if not d.optional:
        bad.append(None)
    for value in bad:
        with pytest.raises(Refused, match=rf"{name}.*Nothing was saved"):
            validate_campaign({name: value})


def test_the_form_is_the_spec_part_by_part():
    assert sorted(FORM_FIELDS) == sorted(SETTINGS)
    assert [SETTINGS[name].part for name in FORM_FIELDS] == sorted(
        (SETTINGS[name].part for name in FORM_FIELDS), key=PARTS.index
    )
    assert all(d.label for d in SETTINGS.values())


def test_the_form_round_trips_the_stored_defaults(db_path, settings):
    with connect(db_path) as db:
        row = store.get_campaign(
            db, create_campaign(db, CampaignSpec(), None, settings.data_dir, "2026-01-01")
        )
    assert form_changes(tuple(form_values(row))) == asdict(CampaignSpec())
    assert {f.name for f in fields(CampaignSpec)} == set(FORM_FIELDS)
