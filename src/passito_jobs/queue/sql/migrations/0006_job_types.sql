-- The job-type registry: which job types workers run. A dispatch of a type no worker ever ran is
-- most likely a typo (`sleep` for `Sleep`): the CLI warns, and the health report lists ready jobs
-- whose type no live worker runs.

-- Every job type a worker ever ran, with when one last did (a row per type: kept).
CREATE TABLE passito_jobs.job_types (
    type       text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- Which worker runs which type, refreshed on every heartbeat round: "live" is a recent row.
-- Rows of workers gone for a day are deleted when any worker registers.
CREATE TABLE passito_jobs.worker_job_types (
    type      text NOT NULL,
    worker_id text NOT NULL,
    last_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (type, worker_id)
);

-- A worker says it runs `types` now. Names are checked as dispatch checks them.
CREATE FUNCTION passito_jobs.register_job_types(worker_id text, types text[]) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    one text;
BEGIN
    FOREACH one IN ARRAY coalesce(register_job_types.types, '{}') LOOP
        IF one IS NULL OR length(one) NOT BETWEEN 1 AND 128 THEN
            RAISE EXCEPTION 'job type must be 1 to 128 characters' USING ERRCODE = 'check_violation';
        END IF;
    END LOOP;
    INSERT INTO passito_jobs.job_types AS t (type)
    SELECT DISTINCT u FROM unnest(register_job_types.types) u
    ON CONFLICT (type) DO UPDATE SET last_seen = now() WHERE t.last_seen < now();
    INSERT INTO passito_jobs.worker_job_types AS w (type, worker_id)
    SELECT DISTINCT u, register_job_types.worker_id FROM unnest(register_job_types.types) u
    ON CONFLICT ON CONSTRAINT worker_job_types_pkey DO UPDATE SET last_seen = now();
    DELETE FROM passito_jobs.worker_job_types WHERE last_seen < now() - interval '1 day';
END;
$$;
