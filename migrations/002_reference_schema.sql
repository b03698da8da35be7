-- 002: the reference schema the example rules.json, the demo and the tests use.
--
-- A dashboard summary has a stable core (topics, workplans, tasks) and a
-- fast-moving progress tail (progress_events); per-run climate results are
-- cached by run_id; impact-calculation results are cached by the version of
-- the impact function that produced them.

CREATE TABLE IF NOT EXISTS topics (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS workplans (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic_id    bigint NOT NULL REFERENCES topics (id) ON DELETE CASCADE,
    title       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS tasks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workplan_id  bigint NOT NULL REFERENCES workplans (id) ON DELETE CASCADE,
    title        text NOT NULL,
    status       text NOT NULL DEFAULT 'todo',
    assignee     text,
    notes        text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS progress_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    run_id      bigint,
    message     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- A climate run's results are cached under nodb:{run_id}:climate. run_id is
-- not the primary key: rows (scenario results) move between runs.
CREATE TABLE IF NOT EXISTS climate_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      bigint NOT NULL,
    scenario    text NOT NULL,
    hazard      text NOT NULL,
    result      jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS climate_runs_run_id ON climate_runs (run_id);

-- Impact functions: mean damage degree (MDD) and percentage of affected assets
-- (PAA) sampled over intensity. Results are cached under
-- impact:{id}:v{version}; changing a coefficient must bump version.
CREATE TABLE IF NOT EXISTS impact_functions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL,
    hazard          text NOT NULL,
    intensity_unit  text NOT NULL,
    mdd_x           double precision[] NOT NULL,
    mdd_y           double precision[] NOT NULL,
    paa_x           double precision[] NOT NULL,
    paa_y           double precision[] NOT NULL,
    version         integer NOT NULL DEFAULT 1,
    attribution     text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
