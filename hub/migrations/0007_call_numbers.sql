-- The hub's database, version 7: a call's parties (and what was heard of each), as its call
-- recorder published them with the
-- recording (firmware/uplink/outbox.py), so that a request, provision or disclosure at the hub
-- finds a call by its number typed any way (domain.requests.catalogue_filter) and shows who
-- spoke (firmware.calls.index.parties). Footage has none of them. The same columns and
-- meanings as the device's calls table (firmware/vault/migrations/0002_calls.sql).
ALTER TABLE recordings ADD COLUMN direction     TEXT CHECK (direction IN ('inbound', 'outbound'));
ALTER TABLE recordings ADD COLUMN withheld      INTEGER NOT NULL DEFAULT 0;
ALTER TABLE recordings ADD COLUMN external_e164 TEXT NOT NULL DEFAULT '';
ALTER TABLE recordings ADD COLUMN external_raw  TEXT NOT NULL DEFAULT '';
ALTER TABLE recordings ADD COLUMN city_e164     TEXT NOT NULL DEFAULT '';
ALTER TABLE recordings ADD COLUMN city_raw      TEXT NOT NULL DEFAULT '';
-- and what was heard of each side, for the yearly report's count of calls not wholly heard
ALTER TABLE recordings ADD COLUMN external_heard TEXT
    CHECK (external_heard IN ('heard', 'silent', 'undecodable', 'encrypted', 'no_media_address'));
ALTER TABLE recordings ADD COLUMN city_heard     TEXT
    CHECK (city_heard IN ('heard', 'silent', 'undecodable', 'encrypted', 'no_media_address'));
