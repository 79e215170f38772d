-- web.db, version 7: people and designations from the city hub (docs/hub.md, webui/hubsync.py).
-- Once the device is enrolled, the hub designates its operators (Art. 5(2)); the uplink keeps
-- the hub's list in DATA/uplink/operators.json and the web UI, this database's only writer,
-- brings users and operators in line with it. An account the hub made or took over is marked
-- (from_hub), and so is a designation made at the hub, which has no designator here
-- (designated_by is NULL): the table is made again to allow that.
ALTER TABLE users ADD COLUMN from_hub INTEGER NOT NULL DEFAULT 0;

CREATE TABLE operators_7 (
    user_id       INTEGER NOT NULL REFERENCES users (id),
    device        TEXT NOT NULL,
    designated_by INTEGER REFERENCES users (id),   -- NULL: designated at the hub
    designated_at TEXT NOT NULL,
    revoked_at    TEXT,
    from_hub      INTEGER NOT NULL DEFAULT 0,      -- the hub's designation: it also revokes it
    PRIMARY KEY (user_id, device),
    CHECK (designated_by IS NOT NULL OR from_hub = 1)
);
INSERT INTO operators_7 (user_id, device, designated_by, designated_at, revoked_at)
    SELECT user_id, device, designated_by, designated_at, revoked_at FROM operators;
DROP TABLE operators;
ALTER TABLE operators_7 RENAME TO operators;

-- The hub's list last applied: a list already applied is not applied (nor logged) again.
CREATE TABLE hub_sync (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    rev       INTEGER NOT NULL,
    digest    TEXT NOT NULL,               -- SHA-256 of operators.json as applied
    synced_at TEXT NOT NULL
);
