-- web.db, version 9: wrong passphrases counted per manager's key, so that a restart of the
-- web UI does not forget them (domain.keys: the key locks, for longer each time).
CREATE TABLE key_guard (
    name         TEXT PRIMARY KEY,            -- the manager's user name (their key's)
    failures     INTEGER NOT NULL DEFAULT 0,  -- wrong passphrases in a row
    locked_until REAL                         -- unix time
);
