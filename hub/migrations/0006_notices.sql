-- The hub's database, version 6: notices. Each entry of the hub's log about a device's
-- recordings (a request filed for them, an opinion on it, a viewing, an export, made at the hub)
-- is sent to that device, which writes it into its own log (`hub.action`); hub/notices.py.
CREATE TABLE notices (
    device TEXT NOT NULL REFERENCES devices (id),
    seq    BIGINT NOT NULL,                 -- the hub's audit entry
    PRIMARY KEY (device, seq)
);
-- how far the hub's log has been read for notices
CREATE TABLE notice_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    next_seq BIGINT NOT NULL
);
INSERT INTO notice_state (id, next_seq) VALUES (1, 0);
-- what each device's log already holds of them (read at every round)
CREATE INDEX device_log_hub_actions ON device_log (device, (((detail::jsonb) ->> 'hub_seq')::bigint))
    WHERE action = 'hub.action';
