-- kiroku.db, version 1. Written only by the recorder process; read by everyone else.
-- Times: *_wall_us are µs since the Unix epoch (UTC); *_at are ISO 8601 with offset, for people.

CREATE TABLE recordings (
    id                 TEXT PRIMARY KEY,
    device             TEXT NOT NULL,
    record_class       TEXT NOT NULL CHECK (record_class IN ('footage', 'call')),
    mode               TEXT NOT NULL,
    started_wall_us    INTEGER NOT NULL,
    started_at         TEXT NOT NULL,
    started_by         TEXT NOT NULL,
    section            TEXT NOT NULL DEFAULT '',   -- responsible section (対応担当課)
    clock_synchronised INTEGER NOT NULL,
    ended_wall_us      INTEGER,
    ended_at           TEXT,
    end_reason         TEXT
);
CREATE INDEX recordings_by_start ON recordings (started_wall_us);

CREATE TABLE marks (
    id           INTEGER PRIMARY KEY,
    recording_id TEXT NOT NULL REFERENCES recordings (id),
    wall_us      INTEGER NOT NULL,
    at           TEXT NOT NULL,
    by           TEXT NOT NULL,
    note         TEXT NOT NULL DEFAULT '',
    section      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX marks_by_recording ON marks (recording_id);

CREATE TABLE segments (
    id                 INTEGER PRIMARY KEY,
    recording_id       TEXT NOT NULL REFERENCES recordings (id),
    seq                INTEGER NOT NULL,
    record_class       TEXT NOT NULL,
    key_day            TEXT NOT NULL,              -- the day key it is sealed to
    path               TEXT NOT NULL UNIQUE,       -- relative to the data folder
    start_wall_us      INTEGER NOT NULL,
    end_wall_us        INTEGER NOT NULL,
    start_mono_us      INTEGER NOT NULL,           -- CLOCK_BOOTTIME of boot_id
    end_mono_us        INTEGER NOT NULL,
    boot_id            TEXT NOT NULL,
    clock_synchronised INTEGER NOT NULL,
    has_audio          INTEGER NOT NULL,
    video_frames       INTEGER NOT NULL,
    audio_samples      INTEGER NOT NULL,
    size               INTEGER NOT NULL,           -- of the sealed file
    sha256             TEXT NOT NULL,              -- of the sealed file
    erased_at          TEXT,                       -- set when overwritten (or found missing/damaged)
    erase_reason       TEXT,
    UNIQUE (recording_id, seq)
);
CREATE INDEX segments_by_start ON segments (start_wall_us);
-- Time-range queries (viewing, exports): equality on the class, a bounded range on the start.
CREATE INDEX segments_kept_by_start ON segments (record_class, start_wall_us) WHERE erased_at IS NULL;
-- Retention: the oldest kept segments first.
CREATE INDEX segments_kept_by_end ON segments (record_class, end_wall_us) WHERE erased_at IS NULL;
CREATE INDEX segments_by_day ON segments (record_class, key_day) WHERE erased_at IS NULL;

CREATE TABLE holds (
    id            INTEGER PRIMARY KEY,
    recording_id  TEXT REFERENCES recordings (id),  -- a whole recording, or
    start_wall_us INTEGER,                          -- a time range (all devices' footage in it)
    end_wall_us   INTEGER,
    reason        TEXT NOT NULL CHECK (reason IN ('incident', 'request', 'provision', 'disclosure')),
    reference     TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    released_at   TEXT,
    released_by   TEXT,
    CHECK (recording_id IS NOT NULL OR (start_wall_us IS NOT NULL AND end_wall_us IS NOT NULL))
);
CREATE INDEX holds_open ON holds (recording_id) WHERE released_at IS NULL;

CREATE TABLE day_keys (
    record_class TEXT NOT NULL,
    day          TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    destroyed_at TEXT,
    PRIMARY KEY (record_class, day)
);

CREATE TABLE overwrites (
    id              INTEGER PRIMARY KEY,
    at              TEXT NOT NULL,
    record_class    TEXT NOT NULL,
    segments        INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    oldest_wall_us  INTEGER NOT NULL,
    newest_wall_us  INTEGER NOT NULL,
    days_destroyed  TEXT NOT NULL DEFAULT ''
);

-- The audit log: an RFC 6962 Merkle tree over the entries, with a checkpoint signed by the
-- device key after every entry (root and signature of the tree of entries 0..seq).
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    purpose   TEXT NOT NULL DEFAULT '',
    subject   TEXT NOT NULL DEFAULT '',
    detail    TEXT NOT NULL DEFAULT '{}',
    leaf_hash BLOB NOT NULL,
    root      BLOB NOT NULL,
    signature BLOB NOT NULL
);

-- The Merkle tree's compact range after the last entry (the roots of its full subtrees,
-- largest first, 32 bytes each), kept in step with the log inside each transaction.
CREATE TABLE audit_state (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    size  INTEGER NOT NULL,
    stack BLOB NOT NULL
);
INSERT INTO audit_state (id, size, stack) VALUES (1, 0, x'');
