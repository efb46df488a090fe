"""The schema, as an ordered list of migrations. Never edit an applied migration: add one.

Every row carries its provenance (who, which round and group, which model version, when).
Times are ISO-8601 UTC strings. The points ledger is append-only, enforced by triggers.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from storage.repairs import repair_shown_texts
from storage.schema_initial import INITIAL

MIGRATIONS = Migrations("crowd")


def run_script(db: Database, script: str) -> None:
    """Run the statements of `script`, one per `;` at a line's end, in the migration's
    transaction (sqlite3's executescript would commit first)."""
    for statement in script.split(";\n"):
        if statement.strip():
            db.execute(statement)


@MIGRATIONS()
def m001_initial(db: Database) -> None:
    run_script(db, INITIAL)


_TRUST = """
-- a newer correction of the same kind, by the same person, of the same reply replaced this one
ALTER TABLE corrections ADD COLUMN replaced_at TEXT;
ALTER TABLE corrections ADD COLUMN replaced_by INTEGER REFERENCES corrections(id);
CREATE INDEX corrections_message ON corrections(message_id, participant_id, kind);
-- all of a person's data moderated out, without a ban
ALTER TABLE participants ADD COLUMN hidden_at TEXT;
-- the campaign's trust settings; these defaults keep an existing campaign as it was
ALTER TABLE campaigns ADD COLUMN reviews_on INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN min_reviews INTEGER NOT NULL DEFAULT 2;
ALTER TABLE campaigns ADD COLUMN person_cap REAL NOT NULL DEFAULT 1.0;
ALTER TABLE campaigns ADD COLUMN require_login INTEGER NOT NULL DEFAULT 0;
CREATE TABLE reviews (
    id INTEGER PRIMARY KEY,
    correction_id INTEGER NOT NULL REFERENCES corrections(id),
    participant_id TEXT NOT NULL REFERENCES participants(id),   -- the reviewer, never the author
    verdict TEXT NOT NULL CHECK (verdict IN ('endorse', 'reject')),
    round_id INTEGER NOT NULL REFERENCES rounds(id),             -- the round it was given in
    created_at TEXT NOT NULL,
    UNIQUE (correction_id, participant_id)
);
CREATE INDEX reviews_participant ON reviews(participant_id)
"""


@MIGRATIONS()
def m002_trust(db: Database) -> None:
    """Issue 12: one live correction per person, kind and reply; peer review; per-person caps.

    Existing campaigns keep today's behaviour (reviews off, no cap); new campaigns get the
    defended defaults from crowd.campaigns.CampaignSpec."""
    run_script(db, _TRUST)


_BEFORE_AFTER = """
-- issue 16: a volunteer's own prompts of a round answered by the champion it started with and
-- by the one it crowned, generated once after crowning; `*_distance` is the emotion scorer's
-- distance to the round's target (NULL for the preference task)
CREATE TABLE before_after (
    id INTEGER PRIMARY KEY,
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    participant_id TEXT NOT NULL REFERENCES participants(id),
    prompt TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    before_distance REAL,
    after_distance REAL,
    created_at TEXT NOT NULL
);
CREATE INDEX before_after_round ON before_after(round_id, participant_id)
"""


@MIGRATIONS()
def m003_before_after(db: Database) -> None:
    """Issue 16: the old champion's and the new champion's replies to volunteers' prompts."""
    run_script(db, _BEFORE_AFTER)


_SOURCES = """
-- issue 26: where every action came from, per campaign: the client's network ('net:<cidr>',
-- a /24 or /56) and, when signed in, the Hugging Face account ('hf:<name>')
CREATE TABLE sightings (
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    participant_id TEXT NOT NULL REFERENCES participants(id),
    source TEXT NOT NULL,
    first_at TEXT NOT NULL,
    last_at TEXT NOT NULL,
    actions INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (campaign_id, participant_id, source)
);
CREATE INDEX sightings_source ON sightings(campaign_id, source);
-- the network a correction was submitted from, and a review given from
ALTER TABLE corrections ADD COLUMN source TEXT;
ALTER TABLE reviews ADD COLUMN source TEXT;
-- networks the organizer declared venues (one CIDR per line): pseudonyms there count alone
ALTER TABLE campaigns ADD COLUMN venues TEXT NOT NULL DEFAULT '';
-- contributors must be members of this Hugging Face organisation (NULL: anyone)
ALTER TABLE campaigns ADD COLUMN hf_org TEXT;
-- the organisations a signed-in person belonged to when they last joined (JSON list)
ALTER TABLE participants ADD COLUMN hf_orgs TEXT
"""


@MIGRATIONS()
def m026_sources(db: Database) -> None:
    """Issue 26: sources of actions, venues, and organisation membership."""
    run_script(db, _SOURCES)


_DEALT_REVIEWS = """
-- issue 26: items with a known verdict, dealt unmarked among the crowd's: a correction the
-- organizer confirmed, or a reference example shown as a rewrite (prompt, original, rewrite)
CREATE TABLE gold (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    correction_id INTEGER REFERENCES corrections(id),
    reference_id INTEGER REFERENCES reference_texts(id),
    verdict TEXT NOT NULL CHECK (verdict IN ('endorse', 'reject')),
    prompt TEXT,
    original TEXT,
    rewrite TEXT,
    created_at TEXT NOT NULL,
    CHECK ((correction_id IS NULL) != (reference_id IS NULL))
);
CREATE UNIQUE INDEX gold_correction ON gold(correction_id) WHERE correction_id IS NOT NULL;
CREATE UNIQUE INDEX gold_reference ON gold(reference_id, verdict) WHERE reference_id IS NOT NULL;
-- what the server dealt each reviewer, and what came of it; a gold item's answer is kept here
CREATE TABLE deals (
    id INTEGER PRIMARY KEY,
    participant_id TEXT NOT NULL REFERENCES participants(id),
    correction_id INTEGER REFERENCES corrections(id),
    gold_id INTEGER REFERENCES gold(id),
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    dealt_at TEXT NOT NULL,
    skipped_at TEXT,
    answered_at TEXT,
    verdict TEXT CHECK (verdict IN ('endorse', 'reject')),
    CHECK ((correction_id IS NULL) != (gold_id IS NULL))
);
CREATE INDEX deals_participant ON deals(participant_id, answered_at, skipped_at);
CREATE INDEX deals_correction ON deals(correction_id);
CREATE INDEX deals_round ON deals(round_id);
ALTER TABLE reviews ADD COLUMN deal_id INTEGER REFERENCES deals(id);
-- with review on, only trusted corrections train (unreviewed and pending ones wait)
ALTER TABLE campaigns ADD COLUMN hold_unreviewed INTEGER NOT NULL DEFAULT 0
"""


@MIGRATIONS()
def m026_dealt_reviews(db: Database) -> None:
    """Issue 26: reviews dealt by the server, gold items, and the unreviewed-corrections rule."""
    run_script(db, _DEALT_REVIEWS)


@MIGRATIONS()
def m027_shown_texts(db: Database) -> None:
    """Issue 27: what is stored is what was shown. A correction records the texts the volunteer
    saw when acting: `shown`, reply A as displayed (their own live rewrite of it, if any), and
    `other_reply`, reply B as displayed (an A/B pick). Rows stored before are repaired from the
    history: the old page showed a saved rewrite in place of the reply, so a later label,
    rating or pick of that reply was made on the rewrite, and a later turn's prompt held it."""
    db.execute("ALTER TABLE corrections ADD COLUMN shown TEXT")
    db.execute("ALTER TABLE corrections ADD COLUMN other_reply TEXT")
    repair_shown_texts(db)


_ROUND_RECORD = """
-- issue 30: the record of what a round trained and judged, written once when its bundle is
-- written (crowd.rounds.record). Points, the export's `used` flag and the model card read it.
CREATE TABLE round_bundles (
    round_id INTEGER PRIMARY KEY REFERENCES rounds(id),
    hash TEXT NOT NULL,                   -- sha256 of the bundle's manifest (its folder's name)
    path TEXT NOT NULL,                   -- the bundle folder, relative to the data dir
    verdicts TEXT NOT NULL DEFAULT '[]',  -- JSON [reviewer, verdict, consensus] of the round's
                                          -- reviews, frozen with the bundle (review points)
    settings TEXT NOT NULL DEFAULT '{}',  -- JSON: base model, mode, seed, training and judging
                                          -- settings, as the bundle has them (the model card)
    created_at TEXT NOT NULL
);
CREATE TABLE round_material (
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    correction_id INTEGER NOT NULL REFERENCES corrections(id),
    participant_id TEXT NOT NULL REFERENCES participants(id),
    group_index INTEGER NOT NULL,
    -- train: admitted to its group's training material; set_aside: of the round's train split,
    -- not admitted (rejected in review, bad standing, over the cap); judge: in the judging set
    role TEXT NOT NULL CHECK (role IN ('train', 'set_aside', 'judge')),
    taught INTEGER NOT NULL DEFAULT 0,    -- 'train': it gives an example the training mode uses
    PRIMARY KEY (round_id, role, correction_id)
);
CREATE INDEX round_material_correction ON round_material(correction_id);
-- the runner that runs a round job, and what it last said about it: the runner ('thread',
-- 'process', 'hf-jobs'), the child's pid or the Hub job's id, the hardware flavor (hf-jobs), the
-- runner's word for the job's stage (RUNNING, COMPLETED, ...), the seconds it has run (billed),
-- the end of its log on failure, and its runner failures so far (for retries)
ALTER TABLE jobs ADD COLUMN runner TEXT;
ALTER TABLE jobs ADD COLUMN external_id TEXT;
ALTER TABLE jobs ADD COLUMN flavor TEXT;
ALTER TABLE jobs ADD COLUMN runner_stage TEXT;
ALTER TABLE jobs ADD COLUMN running_s REAL;
ALTER TABLE jobs ADD COLUMN log_tail TEXT;
ALTER TABLE jobs ADD COLUMN failures INTEGER NOT NULL DEFAULT 0
"""


@MIGRATIONS()
def m030_round_bundle(db: Database) -> None:
    """Issue 30: the round bundle's record (what trained and judged) and the job's runner."""
    run_script(db, _ROUND_RECORD)


_CANDIDATES = """
-- issue 28: more candidates per round, and a judge in stages. These defaults keep an existing
-- campaign as it was; new campaigns get crowd.campaigns.CampaignSpec's defaults.
ALTER TABLE campaigns ADD COLUMN union_candidate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN union_continues INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN memory_rounds INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN memory_groups INTEGER NOT NULL DEFAULT 0;
ALTER TABLE campaigns ADD COLUMN merge_method TEXT NOT NULL DEFAULT 'off'
    CHECK (merge_method IN ('off', 'ties_svd', 'dare_ties_svd', 'svd', 'ties', 'dare_ties', 'linear'));
ALTER TABLE campaigns ADD COLUMN judge TEXT NOT NULL DEFAULT 'fixed'
    CHECK (judge IN ('fixed', 'sequential'));
-- what a candidate is: a group's (group_index set), the union of every group's trusted data,
-- or a merge of group adapters (`sources`: JSON list of the merged versions' ids)
ALTER TABLE model_versions ADD COLUMN kind TEXT NOT NULL DEFAULT 'group'
    CHECK (kind IN ('group', 'union', 'merged'));
ALTER TABLE model_versions ADD COLUMN sources TEXT;
-- what the round could not build, and why (JSON list of texts): written when the round closes
-- into its bundle (a union with no data, a memory window past the campaign's first round) and
-- when it is crowned (a candidate the job could not make, such as a merge of unlike adapters)
ALTER TABLE rounds ADD COLUMN notes TEXT NOT NULL DEFAULT '[]'
"""


@MIGRATIONS()
def m028_candidates(db: Database) -> None:
    """Issue 28: the union, memory and merged candidates, the sequential judge, round notes."""
    run_script(db, _CANDIDATES)
