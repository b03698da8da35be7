-- 001: the role cdcd connects as.
--
-- cdcd needs LOGIN and REPLICATION and nothing else on the data: pgoutput
-- decodes the publication's tables inside the walsender, so the role needs no
-- SELECT on them, and the publication is created by its owner in 004. Set the
-- password out of band:  ALTER ROLE cdcd PASSWORD '...';
-- RDS and Aurora do not allow the REPLICATION attribute: grant rds_replication
-- instead (docs/deploy.md, "The Postgres role", covers managed services).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdcd') THEN
        CREATE ROLE cdcd WITH LOGIN REPLICATION;
    ELSE
        ALTER ROLE cdcd WITH LOGIN REPLICATION;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO cdcd', current_database());
END
$$;

-- Let cdcd read the catalog entries of the tables it watches (primary keys,
-- replica identity) without touching their rows.
GRANT USAGE ON SCHEMA public TO cdcd;
