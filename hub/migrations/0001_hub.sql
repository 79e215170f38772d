-- The hub's database, version 1 (PostgreSQL): the city's register of people, its devices,
-- what they publish (status, a mirror of each audit log, their recordings' metadata), the
-- witness's checkpoints, alerts, and the hub's own audit log.
-- The register's tables have the device's web.db shape (webui/migrations), so the same
-- workflows (domain/) run on both: flags are integers 0/1, times of day are ISO text,
-- instants are unix seconds (double precision) or µs since the epoch (bigint).

CREATE TABLE sections (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE users (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    password_hash   TEXT NOT NULL,            -- Argon2id
    section_id      BIGINT REFERENCES sections (id),
    is_manager      INTEGER NOT NULL DEFAULT 0,
    is_section_head INTEGER NOT NULL DEFAULT 0,
    is_auditor      INTEGER NOT NULL DEFAULT 0,   -- reads logs, witness, registers and reports; never footage
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until    DOUBLE PRECISION,
    disabled_at     TEXT,
    created_at      TEXT NOT NULL
);

-- Each manager's age identity, wrapped under their passphrase (scrypt, as on a device): the hub
-- keeps no key it can open by itself. Devices seal new day keys to the recipients.
CREATE TABLE manager_keys (
    username   TEXT PRIMARY KEY,              -- the manager's (accounts are disabled, never renamed or deleted)
    recipient  TEXT NOT NULL,
    wrapped    BYTEA NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,           -- device.id: counter-2, pbx-1
    kind          TEXT NOT NULL CHECK (kind IN ('counter', 'calls')),
    place         TEXT NOT NULL,              -- where it is, as people say it (市民課窓口 2番)
    vkey          TEXT NOT NULL,              -- its audit log's verifier key (signed-note)
    broker_user   TEXT NOT NULL UNIQUE,
    enrolled_at   TEXT NOT NULL,
    enrolled_by   BIGINT NOT NULL REFERENCES users (id),
    removed_at    TEXT,
    removed_by    BIGINT REFERENCES users (id),
    online        INTEGER NOT NULL DEFAULT 0,
    online_at     DOUBLE PRECISION,           -- when it last came or went
    last_seen     DOUBLE PRECISION,           -- the last message from it
    status        TEXT,                       -- its last status (JSON)
    status_at     DOUBLE PRECISION
);

-- Art. 5(2): the manager designates who may operate each device; nobody else may.
CREATE TABLE operators (
    user_id       BIGINT NOT NULL REFERENCES users (id),
    device        TEXT NOT NULL REFERENCES devices (id),
    designated_by BIGINT NOT NULL REFERENCES users (id),
    designated_at TEXT NOT NULL,
    revoked_at    TEXT,
    PRIMARY KEY (user_id, device)
);

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users (id),
    created_at  DOUBLE PRECISION NOT NULL,
    last_seen   DOUBLE PRECISION NOT NULL,
    ended_at    DOUBLE PRECISION,
    end_reason  TEXT,
    remote_addr TEXT NOT NULL DEFAULT ''
);

-- One-time codes a device enrolls with; only their SHA-256 is kept.
CREATE TABLE enrollments (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code_sha256 TEXT NOT NULL UNIQUE,
    device      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('counter', 'calls')),
    place       TEXT NOT NULL,
    created_by  BIGINT NOT NULL REFERENCES users (id),
    created_at  TEXT NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL,
    used_at     TEXT,
    failures    INTEGER NOT NULL DEFAULT 0
);

-- Each device's audit log, as it published it (the outbox is the log: docs/hub.md).
CREATE TABLE device_log (
    device      TEXT NOT NULL REFERENCES devices (id),
    seq         BIGINT NOT NULL,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    subject     TEXT NOT NULL,
    detail      TEXT NOT NULL,              -- JSON
    leaf_hash   BYTEA NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE INDEX device_log_by_action ON device_log (device, action);

-- The witness: every checkpoint each device signed and published, checked against the last.
CREATE TABLE checkpoints (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device      TEXT NOT NULL REFERENCES devices (id),
    size        BIGINT NOT NULL,
    root        BYTEA NOT NULL,
    note        TEXT NOT NULL,              -- the signed note, as received
    received_at DOUBLE PRECISION NOT NULL,
    consistent  INTEGER NOT NULL,           -- follows from the last good one (and its entries hash into it)
    problem     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX checkpoints_by_device ON checkpoints (device, id);
CREATE UNIQUE INDEX checkpoints_once ON checkpoints (device, size, root);
-- The witness's state per device: the last good checkpoint and the tree's compact range there.
CREATE TABLE witness (
    device     TEXT PRIMARY KEY REFERENCES devices (id),
    size       BIGINT NOT NULL,
    root       BYTEA NOT NULL,
    frontier   BYTEA NOT NULL,              -- firmware.vault.merkle.CompactRange at ``size``
    checked_at DOUBLE PRECISION NOT NULL
);

-- The recordings each device has, as it published them (metadata only: never footage).
CREATE TABLE recordings (
    device          TEXT NOT NULL REFERENCES devices (id),
    id              TEXT NOT NULL,
    record_class    TEXT NOT NULL CHECK (record_class IN ('footage', 'call')),
    started_wall_us BIGINT NOT NULL,
    ended_wall_us   BIGINT,
    started_at      TEXT NOT NULL,
    ended_at        TEXT,
    end_reason      TEXT,
    section         TEXT NOT NULL DEFAULT '',
    marks           TEXT NOT NULL DEFAULT '[]',  -- JSON: [{at, note, section}]
    segments        INTEGER NOT NULL DEFAULT 0,
    updated_at      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, id)
);
CREATE INDEX recordings_by_start ON recordings (started_wall_us);

-- What the manager must look at: a device gone quiet, a sign that failed, a card filling up,
-- an unsynchronised clock, a log that does not follow from its last checkpoint.
CREATE TABLE alerts (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device     TEXT NOT NULL REFERENCES devices (id),
    kind       TEXT NOT NULL CHECK (kind IN ('offline', 'sign', 'fault', 'storage', 'clock', 'log')),
    detail     TEXT NOT NULL DEFAULT '',
    raised_at  DOUBLE PRECISION NOT NULL,
    cleared_at DOUBLE PRECISION
);
CREATE UNIQUE INDEX alerts_open ON alerts (device, kind) WHERE cleared_at IS NULL;

-- The hub's own audit log: people, designations, enrollments, log-ins. An RFC 6962 tree with a
-- checkpoint signed by the hub's key after every entry, as a device's.
CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    purpose   TEXT NOT NULL DEFAULT '',
    subject   TEXT NOT NULL DEFAULT '',
    detail    TEXT NOT NULL,
    leaf_hash BYTEA NOT NULL
);
CREATE TABLE audit_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    size       BIGINT NOT NULL,
    frontier   BYTEA NOT NULL,
    checkpoint TEXT NOT NULL
);

-- What the hub last published to each device's retained topics (operators, managers).
CREATE TABLE pushes (
    device     TEXT NOT NULL REFERENCES devices (id),
    topic      TEXT NOT NULL,
    rev        BIGINT NOT NULL,
    payload    TEXT NOT NULL,
    pushed_at  DOUBLE PRECISION,
    PRIMARY KEY (device, topic)
);
INSERT INTO audit_state (id, size, frontier, checkpoint) VALUES (1, 0, ''::bytea, '');
