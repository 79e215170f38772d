-- web.db, version 1: people, roles and log-in sessions. Written only by the web UI process.

CREATE TABLE sections (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,          -- 課 (e.g. 市民課)
    created_at TEXT NOT NULL
);

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,     -- log-in name
    display_name    TEXT NOT NULL,
    password_hash   TEXT NOT NULL,            -- Argon2id
    section_id      INTEGER REFERENCES sections (id),
    is_manager      INTEGER NOT NULL DEFAULT 0,   -- 管理責任者 (or a deputy)
    is_section_head INTEGER NOT NULL DEFAULT 0,   -- head of section_id
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until    REAL,                     -- unix time
    disabled_at     TEXT,
    created_at      TEXT NOT NULL
);

-- Art. 5(2): the manager designates who may operate each device; nobody else may.
CREATE TABLE operators (
    user_id       INTEGER NOT NULL REFERENCES users (id),
    device        TEXT NOT NULL,
    designated_by INTEGER NOT NULL REFERENCES users (id),
    designated_at TEXT NOT NULL,
    revoked_at    TEXT,
    PRIMARY KEY (user_id, device)
);

CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,             -- random; the cookie carries it, signed
    user_id     INTEGER NOT NULL REFERENCES users (id),
    created_at  REAL NOT NULL,
    last_seen   REAL NOT NULL,
    ended_at    REAL,
    end_reason  TEXT,
    remote_addr TEXT NOT NULL DEFAULT ''
);

-- Who is on duty at the counter (sign-on / sign-off on the operator console).
CREATE TABLE duty (
    id            INTEGER PRIMARY KEY,
    device        TEXT NOT NULL,
    user_id       INTEGER NOT NULL REFERENCES users (id),
    signed_on_at  TEXT NOT NULL,
    signed_off_at TEXT
);
