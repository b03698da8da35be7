-- 003: REPLICA IDENTITY FULL where the rules need the old row.
--
-- Under the default identity an UPDATE carries no old row unless the primary
-- key changed, so cdcd cannot tell which columns changed, nor resolve a key
-- template against the old row. It then falls back to the wider invalidation
-- (the section's key pattern, SCAN + UNLINK) — correct, but costlier.
-- FULL makes the server log the whole old row: more WAL per UPDATE/DELETE.
--
-- impact_functions: the version-bump invariant compares old and new
--   coefficients; without FULL it cannot be checked at all.
-- climate_runs: the run.climate key template uses run_id, which is not part of
--   the primary key; FULL lets a row that moves between runs invalidate exactly
--   the old and the new run's key.
-- tasks: the task-title rule filters on columns (title, status); FULL lets an
--   UPDATE of other columns be ignored.
ALTER TABLE impact_functions REPLICA IDENTITY FULL;
ALTER TABLE climate_runs REPLICA IDENTITY FULL;
ALTER TABLE tasks REPLICA IDENTITY FULL;
