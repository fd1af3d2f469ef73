-- passito-jobs: the job-type registry records the queues each worker takes jobs from, so that a
-- ready job counts as unserved when no live worker runs its type on its queue (a worker with
-- PASSITO_QUEUES=mail does not serve a SendEmail job in the queue `default`).

-- The queues the worker takes jobs from; NULL: every queue (no PASSITO_QUEUES, or a worker
-- older than this migration, which registers without them).
ALTER TABLE passito_jobs.worker_job_types ADD COLUMN queues text[];

-- The new argument has a default, so a worker older than this migration, calling with two
-- arguments, still registers (for every queue, as before). Two overloads would be ambiguous.
DROP FUNCTION passito_jobs.register_job_types(text, text[]);

-- A worker says it runs `types` now, taking jobs from `queues` (NULL or empty: every queue).
-- Names are checked as dispatch checks them.
CREATE FUNCTION passito_jobs.register_job_types(worker_id text, types text[], queues text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    one text;
    problem text;
    served text[];
BEGIN
    FOREACH one IN ARRAY coalesce(register_job_types.types, '{}') LOOP
        IF one IS NULL OR length(one) NOT BETWEEN 1 AND 128 THEN
            RAISE EXCEPTION 'job type must be 1 to 128 characters' USING ERRCODE = 'check_violation';
        END IF;
    END LOOP;
    FOREACH one IN ARRAY coalesce(register_job_types.queues, '{}') LOOP
        problem := passito_jobs.name_problem('queue', one);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION '%', problem USING ERRCODE = 'check_violation';
        END IF;
    END LOOP;
    IF cardinality(register_job_types.queues) > 0 THEN
        served := ARRAY(SELECT DISTINCT q FROM unnest(register_job_types.queues) q ORDER BY q);
    END IF;
    INSERT INTO passito_jobs.job_types AS t (type)
    SELECT DISTINCT u FROM unnest(register_job_types.types) u
    ON CONFLICT (type) DO UPDATE SET last_seen = now() WHERE t.last_seen < now();
    INSERT INTO passito_jobs.worker_job_types AS w (type, worker_id, queues)
    SELECT DISTINCT u, register_job_types.worker_id, served FROM unnest(register_job_types.types) u
    ON CONFLICT ON CONSTRAINT worker_job_types_pkey DO UPDATE SET last_seen = now(), queues = EXCLUDED.queues;
    DELETE FROM passito_jobs.worker_job_types WHERE last_seen < now() - interval '1 day';
END;
$$;
