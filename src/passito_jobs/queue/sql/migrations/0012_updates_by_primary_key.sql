-- passito-jobs: the worker's updates find their jobs by primary key.
--
-- complete, fail, release, heartbeat and snooze update the jobs a worker names by id and attempt.
-- They joined the jobs table with unnest() of the worker's arrays and tested
-- `j.state = 'processing' AND j.worker_id = worker`. The planner estimates those tests from
-- statistics that rarely see a processing job of this worker (ANALYZE finds jobs pending or
-- finished), so it expects one row, reads the jobs first (through jobs_processing_idx, or a scan
-- of a small table) and joins the arrays in a nested loop that unnests them again for every job
-- found: quadratic in the batch (200 jobs: 40,000 rows compared; 20 ms for a complete that takes
-- 3.6 ms done by key). On a drain of 40,000 jobs with batch 200 it was half of PostgreSQL's CPU.
--
-- Now each statement names its rows with `j.id = ANY(ids)` and reads a job's own values from the
-- arrays by its position, with no join for the planner to order wrongly: the jobs are looked up
-- by primary key (or, in a small table, found by one scan), in proportion to the batch. The state
-- is tested as `j.state IS NOT DISTINCT FROM 'processing'` (the same test: state is never null),
-- which the planner cannot match to jobs_processing_idx's predicate, so it never scans every
-- processing job of the fleet to find a worker's few. Results are the same as before.


-- A worker finished jobs successfully (as in 0001).
CREATE OR REPLACE FUNCTION passito_jobs.complete(worker text, ids bigint[], attempts integer[], results jsonb[])
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    done integer;
    parents bigint[];
BEGIN
    WITH updated AS (
        UPDATE passito_jobs.jobs j
        SET state = 'completed', finished_at = now(), heartbeat_at = NULL,
            result = complete.results[array_position(complete.ids, j.id)]
        WHERE j.id = ANY(complete.ids) AND j.state IS NOT DISTINCT FROM 'processing'
          AND j.worker_id = complete.worker
          AND j.attempts = complete.attempts[array_position(complete.ids, j.id)]
        RETURNING j.id, j.has_dependents
    )
    SELECT count(*), array_agg(u.id) FILTER (WHERE u.has_dependents)
    INTO done, parents FROM updated u;
    IF parents IS NOT NULL THEN
        -- A new statement, so dependency rows committed while we waited on a parent's lock are seen.
        PERFORM passito_jobs.release_children(parents);
    END IF;
    RETURN done;
END;
$$;


-- A worker's attempts failed (as in 0001): retried after retry_in seconds while attempts are
-- left, else failed with their descendants. Returns the ids that ended failed.
CREATE OR REPLACE FUNCTION passito_jobs.fail(worker text, ids bigint[], attempts integer[], errors text[],
                                             retry_in double precision[])
RETURNS bigint[]
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    dead bigint[];
    parents bigint[];
BEGIN
    WITH updated AS (
        UPDATE passito_jobs.jobs j
        SET state = CASE WHEN fail.retry_in[array_position(fail.ids, j.id)] IS NOT NULL
                              AND j.attempts < j.max_attempts
                         THEN 'pending'::passito_jobs.job_state ELSE 'failed'::passito_jobs.job_state END,
            run_at = CASE WHEN fail.retry_in[array_position(fail.ids, j.id)] IS NOT NULL
                               AND j.attempts < j.max_attempts
                          THEN now() + make_interval(secs => fail.retry_in[array_position(fail.ids, j.id)])
                          ELSE j.run_at END,
            finished_at = CASE WHEN fail.retry_in[array_position(fail.ids, j.id)] IS NOT NULL
                                    AND j.attempts < j.max_attempts
                               THEN NULL ELSE now() END,
            last_error = fail.errors[array_position(fail.ids, j.id)], heartbeat_at = NULL
        WHERE j.id = ANY(fail.ids) AND j.state IS NOT DISTINCT FROM 'processing'
          AND j.worker_id = fail.worker AND j.attempts = fail.attempts[array_position(fail.ids, j.id)]
        RETURNING j.id, j.state, j.has_dependents
    )
    SELECT array_agg(u.id) FILTER (WHERE u.state = 'failed'),
           array_agg(u.id) FILTER (WHERE u.state = 'failed' AND u.has_dependents)
    INTO dead, parents FROM updated u;
    IF parents IS NOT NULL THEN
        PERFORM passito_jobs.fail_children(parents);
    END IF;
    RETURN coalesce(dead, '{}');
END;
$$;


-- Give jobs back without counting the attempt (graceful shutdown of a worker; as in 0001).
CREATE OR REPLACE FUNCTION passito_jobs.release(worker text, ids bigint[], attempts integer[]) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    released integer;
    woken text[];
BEGIN
    WITH updated AS (
        UPDATE passito_jobs.jobs j
        SET state = 'pending', attempts = j.attempts - 1, run_at = now(), heartbeat_at = NULL,
            worker_id = NULL, claimed_at = NULL
        WHERE j.id = ANY(release.ids) AND j.state IS NOT DISTINCT FROM 'processing'
          AND j.worker_id = release.worker
          AND j.attempts = release.attempts[array_position(release.ids, j.id)]
        RETURNING j.queue
    )
    SELECT count(*), array_agg(DISTINCT u.queue) INTO released, woken FROM updated u;
    IF woken IS NOT NULL THEN
        PERFORM passito_jobs.notify_ready(woken);
    END IF;
    RETURN released;
END;
$$;


-- Heart-beat the jobs a worker runs and store their latest progress (as in 0001). Returns the
-- ids the worker still holds.
CREATE OR REPLACE FUNCTION passito_jobs.heartbeat(worker text, ids bigint[], attempts integer[], progress jsonb[])
RETURNS bigint[]
LANGUAGE sql AS $$
    WITH updated AS (
        UPDATE passito_jobs.jobs j
        SET heartbeat_at = now(),
            progress = coalesce(heartbeat.progress[array_position(heartbeat.ids, j.id)], j.progress)
        WHERE j.id = ANY(heartbeat.ids) AND j.state IS NOT DISTINCT FROM 'processing'
          AND j.worker_id = heartbeat.worker
          AND j.attempts = heartbeat.attempts[array_position(heartbeat.ids, j.id)]
        RETURNING j.id
    )
    SELECT coalesce(array_agg(u.id), '{}') FROM updated u;
$$;


-- Put processing jobs back to pending after `delays` seconds without counting their attempt, or
-- fail those snoozed max_snoozes times already (as in 0005).
CREATE OR REPLACE FUNCTION passito_jobs.snooze(worker text, ids bigint[], attempts integer[],
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
            run_at = now() + make_interval(secs => least(greatest(
                coalesce(snooze.delays[array_position(snooze.ids, j.id)], 0), 0), 3153600000)),
            heartbeat_at = NULL, worker_id = NULL, claimed_at = NULL
        WHERE j.id = ANY(snooze.ids) AND j.state IS NOT DISTINCT FROM 'processing'
          AND j.worker_id = snooze.worker
          AND j.attempts = snooze.attempts[array_position(snooze.ids, j.id)]
          AND j.snoozes < snooze.max_snoozes[array_position(snooze.ids, j.id)]
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
    WHERE j.id = ANY(snooze.ids) AND j.state IS NOT DISTINCT FROM 'processing'
      AND j.worker_id = snooze.worker AND j.attempts = snooze.attempts[array_position(snooze.ids, j.id)];
    IF over.ids IS NOT NULL THEN
        dead := passito_jobs.fail(snooze.worker, over.ids, over.attempts, over.errors,
                                  array_fill(NULL::double precision, ARRAY[cardinality(over.ids)]));
    END IF;
    RETURN dead;
END;
$$;
