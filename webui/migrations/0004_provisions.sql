-- web.db, version 4: the provision register (Art. 9–11) and its exports.

CREATE TABLE provisions (
    id                  INTEGER PRIMARY KEY,
    number              TEXT NOT NULL UNIQUE,     -- e.g. 2026-P001 (fiscal year, sequence)
    fiscal_year         INTEGER NOT NULL,
    ground              TEXT NOT NULL CHECK (ground IN ('committee', 'law', 'investigation', 'crime', 'urgent')),
    recipient           TEXT NOT NULL,
    request_reference   TEXT NOT NULL DEFAULT '', -- the written request; '' = pending (ground 5 only, Art. 11(2))
    request_date        TEXT NOT NULL DEFAULT '',
    recording_id        TEXT NOT NULL,
    start_wall_us       INTEGER NOT NULL,         -- the approved scope
    end_wall_us         INTEGER NOT NULL,
    approved_by         INTEGER NOT NULL REFERENCES users (id),
    note                TEXT NOT NULL DEFAULT '',
    created_at          TEXT NOT NULL,
    hold_ids            TEXT NOT NULL DEFAULT '[]',
    scan_name           TEXT,
    scan_sha256         TEXT,
    -- Art. 10(2): after the committee's deliberation, ask for return or erasure
    return_kind         TEXT CHECK (return_kind IN ('return', 'erasure')),
    return_requested_at TEXT,
    return_outcome      TEXT,
    return_done_at      TEXT,
    status              TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    closed_at           TEXT
);
CREATE INDEX provisions_open ON provisions (status);

CREATE TABLE provision_exports (
    id              INTEGER PRIMARY KEY,
    provision_id    INTEGER NOT NULL REFERENCES provisions (id),
    by_id           INTEGER NOT NULL REFERENCES users (id),
    at              TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    audit_seq       INTEGER,
    clip_seconds    REAL NOT NULL,
    sealed          INTEGER NOT NULL
);
