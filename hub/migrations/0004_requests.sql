-- The hub's database, version 4: written viewing requests (Art. 7–8) for any device's recordings,
-- in the device's web.db shape (webui/migrations 0002–0003) so that domain/requests.py and
-- domain/viewings.py run on both. A recording is named "DEVICE/ID" here.
--
-- Holds the hub places (a request's, a provision's, a disclosure's) are its own rows: a recording
-- under one is copied to the evidence locker (hub/locker.py) and kept there while it lasts.

CREATE TABLE holds (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device       TEXT NOT NULL REFERENCES devices (id),
    recording_id TEXT NOT NULL,
    reason       TEXT NOT NULL CHECK (reason IN ('incident', 'request', 'provision', 'disclosure')),
    reference    TEXT NOT NULL,               -- the record's number: 2026-0001, 2026-P001, 2026-D001
    placed_by    TEXT NOT NULL,
    placed_at    DOUBLE PRECISION NOT NULL,
    released_by  TEXT,
    released_at  DOUBLE PRECISION
);
CREATE INDEX holds_open ON holds (device, recording_id) WHERE released_at IS NULL;

CREATE TABLE requests (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number               TEXT NOT NULL UNIQUE,
    fiscal_year          INTEGER NOT NULL,
    requester_id         BIGINT NOT NULL REFERENCES users (id),
    requester_section_id BIGINT NOT NULL REFERENCES sections (id),
    responsible_section  TEXT NOT NULL,
    responsible_sections TEXT NOT NULL DEFAULT '[]',
    responsible_declared INTEGER NOT NULL DEFAULT 0,
    purpose              TEXT NOT NULL CHECK (purpose IN ('trouble', 'maintenance', 'business')),
    reason               TEXT NOT NULL,
    recording_ids        TEXT NOT NULL,           -- JSON list of "DEVICE/ID"
    range_start_wall_us  BIGINT NOT NULL,
    range_end_wall_us    BIGINT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('awaiting_opinion', 'submitted', 'approved', 'rejected',
                                                         'closed', 'withdrawn')),
    created_at           TEXT NOT NULL,
    hold_ids             TEXT NOT NULL DEFAULT '[]',
    scan_name            TEXT,
    scan_sha256          TEXT,
    scan_at              TEXT,
    closed_at            TEXT
);
CREATE INDEX requests_by_status ON requests (status);

CREATE TABLE opinions (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id BIGINT NOT NULL REFERENCES requests (id),
    by_id      BIGINT NOT NULL REFERENCES users (id),
    opinion    TEXT NOT NULL CHECK (opinion IN ('agree', 'disagree')),
    note       TEXT NOT NULL DEFAULT '',
    at         TEXT NOT NULL
);

CREATE TABLE decisions (
    request_id          BIGINT PRIMARY KEY REFERENCES requests (id),
    by_id               BIGINT NOT NULL REFERENCES users (id),
    decision            TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    note                TEXT NOT NULL DEFAULT '',
    scope_recording_ids TEXT NOT NULL DEFAULT '[]',
    scope_start_wall_us BIGINT,
    scope_end_wall_us   BIGINT,
    valid_from          DOUBLE PRECISION,
    valid_until         DOUBLE PRECISION,
    at                  TEXT NOT NULL
);

CREATE TABLE viewings (
    id           TEXT PRIMARY KEY,
    request_id   BIGINT NOT NULL REFERENCES requests (id),
    unlocked_by  BIGINT NOT NULL REFERENCES users (id),
    viewer_id    BIGINT NOT NULL REFERENCES users (id),
    opened_at    DOUBLE PRECISION NOT NULL,
    closes_at    DOUBLE PRECISION NOT NULL,
    closed_at    DOUBLE PRECISION,
    close_reason TEXT
);
