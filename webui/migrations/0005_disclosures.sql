-- web.db, version 5: the disclosure register (Art. 12) and its handover exports.

CREATE TABLE disclosures (
    id                    INTEGER PRIMARY KEY,
    number                TEXT NOT NULL UNIQUE,   -- e.g. 2026-D001 (fiscal year, sequence)
    fiscal_year           INTEGER NOT NULL,
    kind                  TEXT NOT NULL CHECK (kind IN ('personal', 'public')),  -- 本人開示, 情報公開
    requester             TEXT NOT NULL,          -- personal data: managers only, never in the audit log
    contact               TEXT NOT NULL DEFAULT '',
    identity_check        TEXT CHECK (identity_check IN ('licence', 'my_number', 'passport', 'residence_card',
                                                         'other')),  -- required for 'personal'
    identity_note         TEXT NOT NULL DEFAULT '',
    recording_id          TEXT NOT NULL,
    start_wall_us         INTEGER NOT NULL,       -- the scope asked for
    end_wall_us           INTEGER NOT NULL,
    received_on           TEXT NOT NULL,          -- YYYY-MM-DD: the deadline runs from here
    deadline_days         INTEGER NOT NULL,       -- the rule in force when received (webui/disclosures.py)
    extension_days        INTEGER NOT NULL DEFAULT 0,
    extension_reason      TEXT NOT NULL DEFAULT '',
    extension_notified_on TEXT,                   -- the written notice to the requester
    extended_at           TEXT,
    decision              TEXT CHECK (decision IN ('full', 'partial', 'refused', 'not_held', 'no_confirm')),
    decided_on            TEXT,
    decision_note         TEXT NOT NULL DEFAULT '',
    decided_by            INTEGER REFERENCES users (id),
    received_by           INTEGER NOT NULL REFERENCES users (id),
    note                  TEXT NOT NULL DEFAULT '',
    created_at            TEXT NOT NULL,
    hold_ids              TEXT NOT NULL DEFAULT '[]',
    withdrawn             INTEGER NOT NULL DEFAULT 0,
    status                TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    closed_at             TEXT,
    CHECK (kind = 'public' OR identity_check IS NOT NULL)
);
CREATE INDEX disclosures_open ON disclosures (status);

CREATE TABLE disclosure_exports (
    id              INTEGER PRIMARY KEY,
    disclosure_id   INTEGER NOT NULL REFERENCES disclosures (id),
    by_id           INTEGER NOT NULL REFERENCES users (id),
    at              TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    audit_seq       INTEGER,
    clip_seconds    REAL NOT NULL,
    sealed          INTEGER NOT NULL
);
