-- kiroku.db, version 2: the index of external calls (Art. 2(1)(2)), one row per call.
-- Written only by the call-recorder process: a call recorder's data folder has no camera
-- recorder (one writing process per data folder, as for every other table here).
-- The call's audio is the recording of the same id (record class 'call'); a call that was
-- never answered and carried no early media has a recording without segments.

CREATE TABLE calls (
    recording_id        TEXT PRIMARY KEY REFERENCES recordings (id),
    call_id             TEXT NOT NULL,               -- the SIP Call-ID
    direction           TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    trunk               TEXT NOT NULL,               -- the carrier side, host:port
    transport           TEXT NOT NULL,               -- udp or tcp
    external_raw        TEXT NOT NULL,               -- as signalled
    external_e164       TEXT NOT NULL,               -- '' for withheld numbers and short codes
    city_raw            TEXT NOT NULL,
    city_e164           TEXT NOT NULL,
    withheld            INTEGER NOT NULL,            -- 非通知: the caller withheld the number
    prefix_184          INTEGER NOT NULL,
    prefix_186          INTEGER NOT NULL,
    outside_line        INTEGER NOT NULL,            -- the PBX's outside-line prefix reached the trunk
    invited_wall_us     INTEGER NOT NULL,
    ringing_wall_us     INTEGER,
    answered_wall_us    INTEGER,
    ended_wall_us       INTEGER,
    audio_wall_us       INTEGER,                     -- where the audio starts (answer or early media)
    ring_ms             INTEGER,
    talk_ms             INTEGER,
    disposition         TEXT CHECK (disposition IN ('answered', 'busy', 'no_answer', 'cancelled', 'failed')),
    sip_status          INTEGER,
    end_reason          TEXT,
    ended_by            TEXT,                        -- external, city, or '' (timeout, failure)
    holds               TEXT NOT NULL DEFAULT '[]',  -- [[start_wall_us, end_wall_us], …]
    codecs              TEXT NOT NULL DEFAULT '',
    packets_received    INTEGER NOT NULL DEFAULT 0,
    packets_lost        INTEGER NOT NULL DEFAULT 0,
    packets_duplicate   INTEGER NOT NULL DEFAULT 0,
    packets_late        INTEGER NOT NULL DEFAULT 0,
    loss_percent        REAL NOT NULL DEFAULT 0
);
CREATE INDEX calls_by_start ON calls (invited_wall_us);
CREATE INDEX calls_by_external ON calls (external_e164);
