-- The ticks of the schedules (runner/schedules.py). Named queries, as queries.sql.

-- name: claim_tick
INSERT INTO schedule_ticks (name, tick, node, claimed) VALUES (:name, :tick, :node, :now)
ON CONFLICT (name, tick) DO NOTHING;

-- name: retake_tick
UPDATE schedule_ticks SET node = :node, claimed = :now
WHERE name = :name AND tick = :tick AND thread_id IS NULL AND outcome IS NULL
  AND claimed < :stale;

-- name: stale_ticks
SELECT name, tick FROM schedule_ticks
WHERE thread_id IS NULL AND outcome IS NULL AND claimed < :stale AND tick >= :since
ORDER BY tick;

-- name: record_tick
UPDATE schedule_ticks SET thread_id = :thread_id, outcome = :outcome
WHERE name = :name AND tick = :tick AND node = :node;

-- name: prune_ticks
DELETE FROM schedule_ticks
WHERE name = :name AND tick < :before
  AND tick < (SELECT MAX(tick) FROM schedule_ticks WHERE name = :name);

-- name: last_ticks
SELECT * FROM schedule_ticks s
WHERE s.tick = (SELECT MAX(tick) FROM schedule_ticks WHERE name = s.name)
ORDER BY s.name;
