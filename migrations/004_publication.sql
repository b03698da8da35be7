-- 004: the publication cdcd streams.
--
-- cdcd creates it itself when it is missing and its role may (it must own the
-- tables); run this as the tables' owner otherwise. It must hold every table
-- rules.json names: cdcd refuses to start, naming the table, when one is
-- missing. After adding a rule for a new table:
--   ALTER PUBLICATION cdcd ADD TABLE schema.table;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'cdcd') THEN
        CREATE PUBLICATION cdcd FOR TABLE
            topics, workplans, tasks, progress_events, climate_runs, impact_functions;
    END IF;
END
$$;
