"""The tables the first migration (`storage.schema.m001_initial`) created: the core record of
campaigns, people, rounds, conversations, corrections, judging, jobs and points. Kept apart
from the later migrations because it never changes: later columns and tables are added by
migrations in `storage/schema.py`, and `sqlite_master` holds the table as they left it."""

INITIAL = """
CREATE TABLE participants (
    id TEXT PRIMARY KEY,                 -- server-issued pseudonymous id (uuid4 hex)
    display_name TEXT NOT NULL,
    hf_username TEXT,                    -- set only for Hugging Face logins
    share_identity INTEGER NOT NULL DEFAULT 0,  -- opted in to appear by name in exports
    consented_at TEXT NOT NULL,
    banned_at TEXT,
    ban_reason TEXT,
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX participants_hf ON participants(hf_username) WHERE hf_username IS NOT NULL;

CREATE TABLE campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    task TEXT NOT NULL CHECK (task IN ('emotion', 'preference')),
    target_emotion TEXT,
    n_groups INTEGER NOT NULL CHECK (n_groups BETWEEN 1 AND 26),
    prompts TEXT NOT NULL DEFAULT '[]',          -- JSON list of suggested opening prompts
    round_policy TEXT NOT NULL DEFAULT 'manual' CHECK (round_policy IN ('manual', 'timer', 'count')),
    round_seconds INTEGER,                        -- for 'timer'
    round_corrections INTEGER,                    -- per group, for 'count'
    grouping TEXT NOT NULL DEFAULT 'random'
        CHECK (grouping IN ('random', 'epsilon_greedy', 'interleaved')),
    points_rule TEXT NOT NULL DEFAULT 'paper' CHECK (points_rule IN ('paper', 'shapley')),
    training_mode TEXT NOT NULL DEFAULT 'sft' CHECK (training_mode IN ('sft', 'dpo', 'sft+dpo')),
    min_corrections INTEGER NOT NULL DEFAULT 3,   -- a group with fewer sits the round out
    heldout_share REAL NOT NULL DEFAULT 0.2 CHECK (heldout_share >= 0 AND heldout_share < 1),
    win_margin REAL NOT NULL DEFAULT 0.0,         -- a candidate must beat the champion by this
    licence TEXT NOT NULL DEFAULT 'CC-BY-4.0',
    active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);

CREATE TABLE model_versions (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    round_id INTEGER REFERENCES rounds(id),       -- NULL for the initial (base) version
    group_index INTEGER,                          -- NULL for the initial version
    parent_id INTEGER REFERENCES model_versions(id),
    adapter_path TEXT,                            -- relative to the data dir; NULL = bare base
    status TEXT NOT NULL DEFAULT 'candidate'
        CHECK (status IN ('candidate', 'champion', 'retired', 'failed')),
    error TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE rounds (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    number INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'closing', 'training', 'evaluating', 'done')),
    champion_id INTEGER NOT NULL REFERENCES model_versions(id),  -- what every group serves
    winner_id INTEGER REFERENCES model_versions(id),             -- set when done; may equal champion
    improved INTEGER,                                            -- 1 if a candidate was crowned
    opened_at TEXT NOT NULL,
    closes_at TEXT,                                              -- timer policy deadline
    closed_at TEXT,
    closed_by TEXT,                                              -- 'timer', 'count', 'organizer'
    finished_at TEXT,
    UNIQUE (campaign_id, number)
);

CREATE TABLE memberships (
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    participant_id TEXT NOT NULL REFERENCES participants(id),
    group_index INTEGER NOT NULL,
    assigned_at TEXT NOT NULL,
    PRIMARY KEY (round_id, participant_id)
);

CREATE TABLE conversations (
    id INTEGER PRIMARY KEY,
    participant_id TEXT NOT NULL REFERENCES participants(id),
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    group_index INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id),
    position INTEGER NOT NULL,                    -- order in the conversation
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    model_version_id INTEGER REFERENCES model_versions(id),  -- the writer, for replies
    alternative_of INTEGER REFERENCES messages(id),          -- a second reply to the same turn
    created_at TEXT NOT NULL
);
CREATE INDEX messages_conversation ON messages(conversation_id, position);

CREATE TABLE corrections (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('rewrite', 'choice', 'emotion', 'rating')),
    participant_id TEXT NOT NULL REFERENCES participants(id),
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    group_index INTEGER NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages(id),      -- the reply corrected (reply A)
    other_message_id INTEGER REFERENCES messages(id),         -- reply B, for 'choice'
    model_version_id INTEGER REFERENCES model_versions(id),   -- who wrote the reply
    prompt TEXT NOT NULL,                 -- JSON chat messages up to the reply
    original TEXT NOT NULL,               -- the reply as the model wrote it
    rewrite TEXT,                         -- 'rewrite'
    choice TEXT CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),  -- 'choice'
    emotion TEXT,                         -- 'emotion': one of the 28 GoEmotions labels
    rating INTEGER CHECK (rating IN (-1, 1)),                 -- 'rating'
    split TEXT NOT NULL DEFAULT 'train' CHECK (split IN ('train', 'heldout')),
    hidden_at TEXT,                       -- moderated out of training and export
    undone_at TEXT,                       -- withdrawn by its author
    created_at TEXT NOT NULL
);
CREATE INDEX corrections_round ON corrections(round_id, group_index);
CREATE INDEX corrections_participant ON corrections(participant_id);

CREATE TABLE reference_texts (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    kind TEXT NOT NULL CHECK (kind IN ('emotion', 'pair', 'prompt')),
    prompt TEXT,
    text TEXT,                            -- 'emotion': a text showing the target emotion
    chosen TEXT,                          -- 'pair'
    rejected TEXT,                        -- 'pair'
    label TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE evaluations (
    id INTEGER PRIMARY KEY,
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    model_version_id INTEGER NOT NULL REFERENCES model_versions(id),
    group_index INTEGER,                  -- NULL for the champion
    metric TEXT NOT NULL,                 -- 'emotion_l2' (lower is better), 'pref_accuracy' (higher)
    value REAL NOT NULL,
    loss REAL,                            -- held-out loss, the preference tie-breaker
    n_items INTEGER NOT NULL,
    detail TEXT,                          -- JSON: samples, per-item scores
    created_at TEXT NOT NULL,
    UNIQUE (round_id, model_version_id)
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,                   -- 'round'
    round_id INTEGER REFERENCES rounds(id),
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'cancelled', 'finished', 'failed')),
    progress TEXT NOT NULL DEFAULT '{}',  -- JSON: stage, group, step, steps, loss, eta_s
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    started_at TEXT,
    heartbeat_at TEXT,
    finished_at TEXT
);
CREATE INDEX jobs_status ON jobs(status);

CREATE TABLE points (
    id INTEGER PRIMARY KEY,
    round_id INTEGER NOT NULL REFERENCES rounds(id),
    participant_id TEXT NOT NULL REFERENCES participants(id),
    group_index INTEGER,
    amount REAL NOT NULL,
    rule TEXT NOT NULL,                   -- 'paper', 'shapley', 'initial'
    reason TEXT NOT NULL,                 -- JSON: group rank, share, ... (shown to the volunteer)
    created_at TEXT NOT NULL
);
CREATE INDEX points_participant ON points(participant_id);
CREATE TRIGGER points_no_update BEFORE UPDATE ON points
BEGIN SELECT RAISE(ABORT, 'the points ledger is append-only'); END;
CREATE TRIGGER points_no_delete BEFORE DELETE ON points
BEGIN SELECT RAISE(ABORT, 'the points ledger is append-only'); END;
"""
