-- kiroku.db, version 4: a call in progress survives a restart of its recorder (issue 27).
-- Each call's dialog as the tracker knows it (its parties, tags, answer, holds, where each side
-- sends its audio, the codecs, the packet counts so far) is kept as it changes, in the same
-- transaction as its row in calls; the row goes when the call ends. A call recorder that starts
-- again takes each one up as the same call and the same recording (firmware/calls/tracker.py
-- Call.snapshot), and what it did not hear in between is a gap, stated in calls.gaps.
CREATE TABLE call_dialogs (
    recording_id TEXT PRIMARY KEY REFERENCES recordings (id),
    state        TEXT NOT NULL               -- JSON: Call.snapshot()
);
-- [[from_wall_us, to_wall_us, why], …]: stretches of a call its recorder did not hear (stopped
-- or restarting); the audio there is silence of the gap's length, so the track keeps the call's time.
ALTER TABLE calls ADD COLUMN gaps TEXT NOT NULL DEFAULT '[]';
-- What was heard of each side of an answered call, and why not (firmware.regulation.Hearing):
-- NULL when there was nothing to hear (not answered, no early media). A side never heard is
-- not "0 % loss". With the packets that could not be decoded, and SDP bodies that could not
-- be read.
ALTER TABLE calls ADD COLUMN external_heard TEXT
    CHECK (external_heard IN ('heard', 'silent', 'undecodable', 'encrypted', 'no_media_address'));
ALTER TABLE calls ADD COLUMN city_heard TEXT
    CHECK (city_heard IN ('heard', 'silent', 'undecodable', 'encrypted', 'no_media_address'));
ALTER TABLE calls ADD COLUMN packets_undecodable INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN packets_encrypted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN sdp_errors INTEGER NOT NULL DEFAULT 0;
-- The Request-URI's user when it was not the number dialled (an extension "201", a trunk
-- account): the called number is then To's, and this is where the PBX sent the call.
ALTER TABLE calls ADD COLUMN reached TEXT NOT NULL DEFAULT '';
-- A caller who withheld their number (非通知) has none kept (docs/calls.md, "Numbers"): rows
-- made before that rule forget it now.
UPDATE calls SET external_e164 = '', external_raw = '' WHERE withheld = 1 AND direction = 'inbound';
