-- The hub's database, version 2: wrong passphrases counted per manager's key, as on a device
-- (webui/migrations/0009_key_guard.sql, domain.keys).
CREATE TABLE key_guard (
    name         TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL DEFAULT 0,
    locked_until DOUBLE PRECISION
);
