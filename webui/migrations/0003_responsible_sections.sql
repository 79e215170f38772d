-- web.db, version 3: a request may concern several responsible sections (its recordings were
-- marked for more than one); each is asked for an opinion unless it is the requester's own.
-- When no mark tells, the requester declares the section, and the manager must confirm it.
ALTER TABLE requests ADD COLUMN responsible_sections TEXT NOT NULL DEFAULT '[]';
ALTER TABLE requests ADD COLUMN responsible_declared INTEGER NOT NULL DEFAULT 0;
UPDATE requests SET responsible_sections = json_array(responsible_section);
