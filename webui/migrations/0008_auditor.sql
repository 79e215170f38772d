-- web.db, version 8: the auditor (監査担当): reads the audit log, the registers and the reports —
-- never footage. The city's internal audit, or the third-party committee's secretariat.
ALTER TABLE users ADD COLUMN is_auditor INTEGER NOT NULL DEFAULT 0;
