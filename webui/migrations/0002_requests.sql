-- web.db, version 2: written viewing requests (Art. 8), opinions, decisions, viewing sessions.

CREATE TABLE requests (
    id                   INTEGER PRIMARY KEY,
    number               TEXT NOT NULL UNIQUE,    -- e.g. 2026-0001 (fiscal year, sequence)
    fiscal_year          INTEGER NOT NULL,
    requester_id         INTEGER NOT NULL REFERENCES users (id),
    requester_section_id INTEGER NOT NULL REFERENCES sections (id),
    responsible_section  TEXT NOT NULL,           -- 対応担当課 of the recordings (Art. 2(6))
    purpose              TEXT NOT NULL CHECK (purpose IN ('trouble', 'maintenance', 'business')),  -- Art. 7 (1)(2)(4)
    reason               TEXT NOT NULL,
    recording_ids        TEXT NOT NULL,           -- JSON list
    range_start_wall_us  INTEGER NOT NULL,
    range_end_wall_us    INTEGER NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('awaiting_opinion', 'submitted', 'approved', 'rejected',
                                                         'closed', 'withdrawn')),
    created_at           TEXT NOT NULL,
    hold_ids             TEXT NOT NULL DEFAULT '[]',
    scan_name            TEXT,                    -- the signed form, scanned (in <data>/web/scans)
    scan_sha256          TEXT,
    scan_at              TEXT,
    closed_at            TEXT
);
CREATE INDEX requests_by_status ON requests (status);

-- Art. 8(3): another section's head may request; the responsible section head is asked first.
CREATE TABLE opinions (
    id         INTEGER PRIMARY KEY,
    request_id INTEGER NOT NULL REFERENCES requests (id),
    by_id      INTEGER NOT NULL REFERENCES users (id),
    opinion    TEXT NOT NULL CHECK (opinion IN ('agree', 'disagree')),
    note       TEXT NOT NULL DEFAULT '',
    at         TEXT NOT NULL
);

CREATE TABLE decisions (
    request_id          INTEGER PRIMARY KEY REFERENCES requests (id),
    by_id               INTEGER NOT NULL REFERENCES users (id),
    decision            TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    note                TEXT NOT NULL DEFAULT '',
    scope_recording_ids TEXT NOT NULL DEFAULT '[]',
    scope_start_wall_us INTEGER,
    scope_end_wall_us   INTEGER,
    valid_from          REAL,
    valid_until         REAL,
    at                  TEXT NOT NULL
);

CREATE TABLE viewings (
    id           TEXT PRIMARY KEY,
    request_id   INTEGER NOT NULL REFERENCES requests (id),
    unlocked_by  INTEGER NOT NULL REFERENCES users (id),
    viewer_id    INTEGER NOT NULL REFERENCES users (id),
    opened_at    REAL NOT NULL,
    closes_at    REAL NOT NULL,
    closed_at    REAL,
    close_reason TEXT
);
