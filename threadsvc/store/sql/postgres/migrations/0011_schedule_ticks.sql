-- 0011: the ticks of the [schedules.NAME] tables (runner/schedules.py). A tick is one row,
-- claimed by the node that inserts it (the primary key lets one node do so), then given the
-- thread it started or the reason its start was refused. A claim with neither, older than
-- lease-timeout, is taken over by another node.
CREATE TABLE schedule_ticks (
    name TEXT NOT NULL,
    tick BIGINT NOT NULL,
    node TEXT NOT NULL,
    claimed BIGINT NOT NULL,
    thread_id TEXT,
    outcome TEXT,
    PRIMARY KEY (name, tick)
);
CREATE INDEX schedule_ticks_open ON schedule_ticks (claimed)
    WHERE thread_id IS NULL AND outcome IS NULL;
