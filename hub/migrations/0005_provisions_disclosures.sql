-- The hub's database, version 5: the provision register (Art. 9–11) and the disclosure register
-- (Art. 12) for any device's recordings, in the device's web.db shape (webui/migrations 0004–0005)
-- so that domain/provisions.py and domain/disclosures.py run on both. A recording is named
-- "DEVICE/ID" here; its exports are cut from the evidence locker (hub/evidence.py).

CREATE TABLE provisions (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number              TEXT NOT NULL UNIQUE,     -- e.g. 2026-P001 (fiscal year, sequence)
    fiscal_year         INTEGER NOT NULL,
    ground              TEXT NOT NULL CHECK (ground IN ('committee', 'law', 'investigation', 'crime', 'urgent')),
    recipient           TEXT NOT NULL,
    request_reference   TEXT NOT NULL DEFAULT '', -- the written request; '' = pending (ground 5 only, Art. 11(2))
    request_date        TEXT NOT NULL DEFAULT '',
    recording_id        TEXT NOT NULL,
    start_wall_us       BIGINT NOT NULL,         -- the approved scope
    end_wall_us         BIGINT NOT NULL,
    approved_by         BIGINT NOT NULL REFERENCES users (id),
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
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provision_id    BIGINT NOT NULL REFERENCES provisions (id),
    by_id           BIGINT NOT NULL REFERENCES users (id),
    at              TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    audit_seq       BIGINT,
    clip_seconds    DOUBLE PRECISION NOT NULL,
    sealed          INTEGER NOT NULL
);


CREATE TABLE disclosures (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number                TEXT NOT NULL UNIQUE,   -- e.g. 2026-D001 (fiscal year, sequence)
    fiscal_year           INTEGER NOT NULL,
    kind                  TEXT NOT NULL CHECK (kind IN ('personal', 'public')),  -- 本人開示, 情報公開
    requester             TEXT NOT NULL,          -- personal data: managers only, never in the audit log
    contact               TEXT NOT NULL DEFAULT '',
    identity_check        TEXT CHECK (identity_check IN ('licence', 'my_number', 'passport', 'residence_card',
                                                         'other')),  -- required for 'personal'
    identity_note         TEXT NOT NULL DEFAULT '',
    recording_id          TEXT NOT NULL,
    start_wall_us         BIGINT NOT NULL,       -- the scope asked for
    end_wall_us           BIGINT NOT NULL,
    received_on           TEXT NOT NULL,          -- YYYY-MM-DD: the deadline runs from here
    deadline_days         INTEGER NOT NULL,       -- the rule in force when received (webui/disclosures.py)
    extension_days        INTEGER NOT NULL DEFAULT 0,
    extension_reason      TEXT NOT NULL DEFAULT '',
    extension_notified_on TEXT,                   -- the written notice to the requester
    extended_at           TEXT,
    decision              TEXT CHECK (decision IN ('full', 'partial', 'refused', 'not_held', 'no_confirm')),
    decided_on            TEXT,
    decision_note         TEXT NOT NULL DEFAULT '',
    decided_by            BIGINT REFERENCES users (id),
    received_by           BIGINT NOT NULL REFERENCES users (id),
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
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    disclosure_id   BIGINT NOT NULL REFERENCES disclosures (id),
    by_id           BIGINT NOT NULL REFERENCES users (id),
    at              TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    audit_seq       BIGINT,
    clip_seconds    DOUBLE PRECISION NOT NULL,
    sealed          INTEGER NOT NULL
);
