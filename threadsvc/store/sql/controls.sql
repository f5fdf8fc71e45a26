-- Named queries of the administrators' controls (store/controls.py), for both stores.

-- name: pause_job
INSERT INTO paused_jobs (job, paused, actor) VALUES (:job, :now, :actor)
ON CONFLICT (job) DO NOTHING;

-- name: resume_job
DELETE FROM paused_jobs WHERE job = :job;

-- name: paused_jobs
SELECT job, paused, actor FROM paused_jobs ORDER BY job;

-- name: node_started
-- A node (re)starting takes its settings again: what was asked of an earlier run is done.
INSERT INTO nodes (node, started, seen, running, capacity, max_running, draining, drained)
VALUES (:node, :now, :now, 0, :capacity, NULL, 0, 0)
ON CONFLICT (node) DO UPDATE SET started = excluded.started, seen = excluded.seen, running = 0,
    capacity = excluded.capacity, max_running = NULL, draining = 0, drained = 0;

-- name: node_beat
-- What the node runs and may run now, and (RETURNING) what was asked of it since.
INSERT INTO nodes (node, started, seen, running, capacity, max_running, draining, drained)
VALUES (:node, :now, :now, :running, :capacity, NULL, 0, :drained)
ON CONFLICT (node) DO UPDATE SET seen = excluded.seen, running = excluded.running,
    capacity = excluded.capacity, drained = excluded.drained
RETURNING max_running, draining;

-- name: set_node_max_running
UPDATE nodes SET max_running = :most WHERE node = :node;

-- name: set_node_draining
UPDATE nodes SET draining = :draining, drained = CASE WHEN :draining = 1 THEN drained ELSE 0 END
WHERE node = :node;

-- name: get_node
SELECT * FROM nodes WHERE node = :node;

-- name: list_nodes
SELECT * FROM nodes WHERE seen >= :since ORDER BY node;
