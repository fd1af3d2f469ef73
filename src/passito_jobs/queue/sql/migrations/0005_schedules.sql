-- Periodic jobs (the schedules table), snooze, and results: passito_jobs.job_result() and a
-- notification when an awaited job finishes (passito_jobs.wait in Python).

-- One row per schedule the maintenance lease holder knows (from code or the schedules file).
-- `last_slot` is the latest slot dealt with (dispatched, or skipped by the catch-up rule); it is
-- moved in the same transaction as the jobs of its slots, under the row's lock, so each slot is
-- dispatched once across the fleet, across lease handovers and restarts. `checked_at` is when a
-- holder last looked at the schedule: a longer gap means nobody was watching (the catch-up rule).
CREATE TABLE passito_jobs.schedules (
    name text PRIMARY KEY,
    type text NOT NULL,
    queue text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    cron text,
    every double precision,
    timezone text NOT NULL DEFAULT 'UTC',
    catch_up text NOT NULL DEFAULT 'latest',
    paused boolean NOT NULL DEFAULT false,
    stale boolean NOT NULL DEFAULT false,
    last_slot timestamptz,
    last_job_id bigint,
    next_slot timestamptz,
    checked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Snoozes: how often the job asked to run later without spending an attempt.
ALTER TABLE passito_jobs.jobs ADD COLUMN snoozes integer NOT NULL DEFAULT 0;
-- Set by a waiter (passito_jobs.wait): the job's end is announced on passito_jobs_finished.
ALTER TABLE passito_jobs.jobs ADD COLUMN awaited boolean NOT NULL DEFAULT false;

-- Put processing jobs back to pending after `delays` seconds without counting their attempt;
-- a job snoozed `max_snoozes` times already fails for good instead (through passito_jobs.fail,
-- so its dependents follow the dependency rules). Returns the ids that failed.
CREATE FUNCTION passito_jobs.snooze(worker text, ids bigint[], attempts integer[],
                                    delays double precision[], max_snoozes integer[])
RETURNS bigint[]
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    over record;
    dead bigint[] := '{}';
    woken text[];
BEGIN
    WITH updated AS (
        UPDATE passito_jobs.jobs j
        SET state = 'pending', attempts = j.attempts - 1, snoozes = j.snoozes + 1,
            run_at = now() + make_interval(secs => least(greatest(coalesce(r.delay, 0), 0), 3153600000)),
            heartbeat_at = NULL, worker_id = NULL, claimed_at = NULL
        FROM unnest(snooze.ids, snooze.attempts, snooze.delays, snooze.max_snoozes)
             AS r(id, attempt, delay, max_snoozes)
        WHERE j.id = r.id AND j.state = 'processing' AND j.worker_id = snooze.worker
          AND j.attempts = r.attempt AND j.snoozes < r.max_snoozes
        RETURNING j.queue, j.run_at
    )
    SELECT array_agg(DISTINCT u.queue) FILTER (WHERE u.run_at <= now()) INTO woken FROM updated u;
    IF woken IS NOT NULL THEN
        PERFORM passito_jobs.notify_ready(woken);
    END IF;
    SELECT array_agg(j.id) AS ids, array_agg(j.attempts) AS attempts,
           array_agg(format('snoozed %s times, the most its job type allows (max_snoozes)', j.snoozes)) AS errors
    INTO over
    FROM passito_jobs.jobs j
    JOIN unnest(snooze.ids, snooze.attempts) AS r(id, attempt) ON j.id = r.id
    WHERE j.state = 'processing' AND j.worker_id = snooze.worker AND j.attempts = r.attempt;
    IF over.ids IS NOT NULL THEN
        dead := passito_jobs.fail(snooze.worker, over.ids, over.attempts, over.errors,
                                  array_fill(NULL::double precision, ARRAY[cardinality(over.ids)]));
    END IF;
    RETURN dead;
END;
$$;

-- A job's state, result and error, for callers in other languages (the PHP app) and `wait`.
-- No row when the job does not exist (or was pruned).
CREATE FUNCTION passito_jobs.job_result(job_id bigint)
RETURNS TABLE (state passito_jobs.job_state, result jsonb, last_error text, finished_at timestamptz)
LANGUAGE sql STABLE
AS $$
    SELECT j.state, j.result, j.last_error, j.finished_at FROM passito_jobs.jobs j WHERE j.id = job_result.job_id;
$$;

-- Announce the end of an awaited job (its id on channel passito_jobs_finished). Only rows a
-- waiter marked fire it: other jobs pay for the trigger's WHEN test alone.
CREATE FUNCTION passito_jobs.notify_finished() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('passito_jobs_finished', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_finished
AFTER UPDATE OF state ON passito_jobs.jobs
FOR EACH ROW
WHEN (NEW.awaited AND NEW.state IN ('completed', 'failed', 'cancelled') AND OLD.state IS DISTINCT FROM NEW.state)
EXECUTE FUNCTION passito_jobs.notify_finished();
