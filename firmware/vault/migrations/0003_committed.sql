-- kiroku.db, version 3: the index and the audit log vouch for each other (firmware/vault/vouch.py).
-- Each row below carries the sequence number of the audit entry that committed it, written in
-- the same transaction: a segment's own entry (segment.sealed: its path, size, hash, times and
-- day key), a recording's recording.start, a hold's hold.create or incident.mark, a day key's
-- key.day_created. A log cut shorter than what these refer to, a row that differs from its
-- entry, or an entry whose row has gone is found by `kiroku audit verify` and `kiroku vault
-- check`. Rows made before this version keep NULL; the recorder's first entry after it
-- (index.committed) says up to which row that is allowed.
ALTER TABLE recordings ADD COLUMN audit_seq INTEGER;
ALTER TABLE segments ADD COLUMN audit_seq INTEGER;
ALTER TABLE holds ADD COLUMN audit_seq INTEGER;
ALTER TABLE day_keys ADD COLUMN audit_seq INTEGER;
-- What the comparison and the audit page's list of actions look up (the log grows by a segment
-- entry every few seconds of recording).
CREATE INDEX audit_by_action ON audit (action, subject);
