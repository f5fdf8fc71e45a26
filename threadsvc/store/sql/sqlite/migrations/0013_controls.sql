-- 0013: the administrators' controls (store/controls.py). Every node's claim passes over the
-- waiting threads of a paused job; each node keeps a row of what it runs and may run, beating
-- every few seconds, which also carries what an administrator asked of it: another
-- max-running (NULL: its own setting) or a drain (claim nothing more). `drained` is the node
-- saying it has stopped claiming; with `running` at 0 it is empty.
CREATE TABLE paused_jobs (
    job TEXT PRIMARY KEY,
    paused INTEGER NOT NULL,
    actor TEXT
);
CREATE TABLE nodes (
    node TEXT PRIMARY KEY,
    started INTEGER NOT NULL,
    seen INTEGER NOT NULL,
    running INTEGER NOT NULL DEFAULT 0,
    capacity INTEGER NOT NULL,
    max_running INTEGER,
    draining INTEGER NOT NULL DEFAULT 0,
    drained INTEGER NOT NULL DEFAULT 0
);
