-- The hub's database, version 3: the evidence locker (hub/locker.py). What each device holds
-- under a hold is copied, still sealed, to the city's S3 bucket; a row per object, from the
-- moment the hub wants it to the moment it is deleted (each deletion in the hub's audit log).
ALTER TABLE recordings ADD COLUMN holds INTEGER NOT NULL DEFAULT 0;  -- open holds, as the device last said

CREATE TABLE locker (
    device       TEXT NOT NULL REFERENCES devices (id),
    key          TEXT NOT NULL,             -- the object's key in the bucket: DEVICE/PATH
    path         TEXT NOT NULL,             -- the file in the device's data folder
    kind         TEXT NOT NULL CHECK (kind IN ('segment', 'day_key')),
    recording_id TEXT NOT NULL DEFAULT '',  -- a segment's recording
    record_class TEXT NOT NULL,
    day          TEXT NOT NULL,             -- the day key it is sealed to (a segment) or is (a day key)
    sha256       TEXT NOT NULL DEFAULT '',  -- a segment's, as its device's witnessed log committed it
    size         BIGINT NOT NULL DEFAULT 0,
    state        TEXT NOT NULL CHECK (state IN ('wanted', 'kept', 'deleted')),
    url          TEXT NOT NULL DEFAULT '',  -- the presigned PUT the device was sent, until it expires
    url_expires  DOUBLE PRECISION,
    wanted_at    DOUBLE PRECISION NOT NULL,
    kept_at      DOUBLE PRECISION,          -- the copy was found whole (its SHA-256 the log's)
    deleted_at   DOUBLE PRECISION,
    problem      TEXT NOT NULL DEFAULT '',  -- a copy that does not match: said, and asked for again
    PRIMARY KEY (device, key)
);
CREATE INDEX locker_by_state ON locker (state, device);
CREATE INDEX locker_by_recording ON locker (device, recording_id);
-- a held recording's segments, found from the recording (not by reading every segment's entry)
CREATE INDEX device_log_segments ON device_log (device, ((detail::jsonb ->> 'recording')))
    WHERE action = 'segment.sealed';

ALTER TABLE alerts DROP CONSTRAINT alerts_kind_check;
ALTER TABLE alerts ADD CONSTRAINT alerts_kind_check
    CHECK (kind IN ('offline', 'sign', 'fault', 'storage', 'clock', 'log', 'locker'));
