-- passito-jobs: unique-job modes and completion callbacks (flows).
--
-- unique_for       also dedupe against jobs of the unique key that finished (completed, failed
--                  or cancelled) less than this long ago, not only against unfinished ones.
-- unique_mode      'keep' (as before: the existing job is kept as it is) or 'replace': a job of
--                  the key that has not started (blocked or pending) takes the new payload and
--                  run_at (debounce); a processing one is never touched.
-- depends_on_mode  'completed' (as before: the child runs once every parent completed, and fails
--                  when one fails or is cancelled) or 'finished': the child runs once every
--                  parent finished, whatever the outcome, and is given their outcomes (claim's
--                  new `parents` column; `ctx.parents` in Python).
--
-- The new column is NULL for a job without parents (most jobs: no bytes written for them) and
-- holds the mode of a job with parents. The functions check the new arguments, with the same
-- messages as Python (src/passito_jobs/queue/limits.py), as 0002 does for the others.

ALTER TABLE passito_jobs.jobs ADD COLUMN depends_on_mode text;

-- unique_for looks for a finished job of the key: the finished jobs that have a key, by key.
CREATE INDEX jobs_unique_key_finished_idx ON passito_jobs.jobs (unique_key, finished_at)
    WHERE unique_key IS NOT NULL AND state IN ('completed', 'failed', 'cancelled');


-- Why the unique and dependency options of a dispatch are refused, or NULL.
CREATE FUNCTION passito_jobs.flow_problem(unique_key text, unique_for interval, unique_mode text,
                                          depends_on_mode text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF unique_for IS NOT NULL THEN
        IF unique_for <= interval '0' THEN
            RETURN format('unique_for must be a positive duration, got %s seconds',
                          extract(epoch FROM unique_for)::double precision);
        ELSIF unique_for > interval '36500 days' THEN
            RETURN format('unique_for must be at most 36500d (100 years), got %s seconds',
                          extract(epoch FROM unique_for)::double precision);
        ELSIF unique_key IS NULL THEN
            RETURN 'unique_for needs a unique_key';
        END IF;
    END IF;
    IF unique_mode IS NULL OR unique_mode NOT IN ('keep', 'replace') THEN
        RETURN format('unique_mode must be ''keep'' or ''replace'', got %s',
                      coalesce(quote_literal(unique_mode), 'null'));
    ELSIF unique_mode = 'replace' AND unique_key IS NULL THEN
        RETURN 'unique_mode ''replace'' needs a unique_key';
    END IF;
    IF depends_on_mode IS NULL OR depends_on_mode NOT IN ('completed', 'finished') THEN
        RETURN format('depends_on_mode must be ''completed'' or ''finished'', got %s',
                      coalesce(quote_literal(depends_on_mode), 'null'));
    END IF;
    RETURN NULL;
END;
$$;


-- The outcomes of a finished-mode child's parents, for its claim: one object per parent that
-- still exists (id, type, state, result, error), in id order. Results count towards 8 MiB of
-- JSON text in all; those past it read as null with `result_omitted` (wait() or job_result()
-- reads them), so a wide fan-in cannot make a claim too large to answer.
CREATE FUNCTION passito_jobs.parent_outcomes(parents bigint[]) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', p.id, 'type', p.type, 'state', p.state, 'error', p.last_error,
               'result', CASE WHEN p.within THEN p.result END,
               'result_omitted', p.result IS NOT NULL AND NOT p.within) ORDER BY p.id), '[]'::jsonb)
    FROM (SELECT j.id, j.type, j.state, j.last_error, j.result,
                 sum(coalesce(octet_length(j.result::text), 0)) OVER (ORDER BY j.id) <= 8388608 AS within
          FROM passito_jobs.jobs j WHERE j.id = ANY(parent_outcomes.parents)) p;
$$;


-- Parents that ended (any outcome): count them off their blocked finished-mode children, as
-- release_children does for completed parents; a child with none left becomes pending.
CREATE FUNCTION passito_jobs.release_finished_children(ended bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    woken text[];
    released integer;
BEGIN
    WITH counts AS (
        SELECT d.child_id, count(*)::integer AS n
        FROM passito_jobs.job_dependencies d
        WHERE d.parent_id = ANY(ended)
        GROUP BY d.child_id
    ),
    updated AS (
        UPDATE passito_jobs.jobs c
        SET waiting_on = c.waiting_on - counts.n,
            state = CASE WHEN c.waiting_on - counts.n <= 0 THEN 'pending'::passito_jobs.job_state ELSE c.state END
        FROM counts
        WHERE c.id = counts.child_id AND c.state = 'blocked' AND c.depends_on_mode = 'finished'
        RETURNING c.queue, c.state
    )
    SELECT array_agg(DISTINCT u.queue) FILTER (WHERE u.state = 'pending'),
           count(*) FILTER (WHERE u.state = 'pending')
    INTO woken, released
    FROM updated u;
    IF woken IS NOT NULL THEN
        PERFORM passito_jobs.notify_ready(woken);
    END IF;
    RETURN released;
END;
$$;


-- Parents ended `failed` or `cancelled` (fail, cancel, rescue and snooze call this): as in 0001,
-- every unfinished descendant reached through completed-mode children fails, naming the job it
-- waited on; a finished-mode child is not failed but counted off, for the parents and for every
-- descendant that failed here (it runs once all its parents have ended).
CREATE OR REPLACE FUNCTION passito_jobs.fail_children(parents bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    failed bigint[];
BEGIN
    WITH RECURSIVE descendants(child_id, parent_id, depth) AS (
        SELECT d.child_id, d.parent_id, 1
        FROM passito_jobs.job_dependencies d
        JOIN passito_jobs.jobs c ON c.id = d.child_id
        WHERE d.parent_id = ANY(parents) AND c.depends_on_mode IS DISTINCT FROM 'finished'
        UNION
        SELECT d.child_id, d.parent_id, x.depth + 1
        FROM passito_jobs.job_dependencies d
        JOIN descendants x ON d.parent_id = x.child_id
        JOIN passito_jobs.jobs c ON c.id = d.child_id
        WHERE x.depth < 1000 AND c.depends_on_mode IS DISTINCT FROM 'finished'
    ),
    first_cause AS (
        SELECT DISTINCT ON (x.child_id) x.child_id, x.parent_id
        FROM descendants x
        ORDER BY x.child_id, x.depth, x.parent_id
    ),
    updated AS (
        UPDATE passito_jobs.jobs c
        SET state = 'failed', finished_at = now(),
            last_error = format('parent job #%s %s', f.parent_id,
                                coalesce((SELECT p.state::text FROM passito_jobs.jobs p WHERE p.id = f.parent_id
                                          AND p.state IN ('failed', 'cancelled')), 'failed'))
        FROM first_cause f
        WHERE c.id = f.child_id AND c.state IN ('blocked', 'pending')
        RETURNING c.id
    )
    SELECT array_agg(u.id) INTO failed FROM updated u;
    -- A new statement: it sees the descendants failed above.
    PERFORM passito_jobs.release_finished_children(parents || coalesce(failed, '{}'));
    RETURN coalesce(cardinality(failed), 0);
END;
$$;


-- How many of `parents` have not finished (a finished-mode child waits on these). Call it after
-- lock_parents, in a new statement, so a parent that ended while we waited for its lock counts
-- as ended.
CREATE FUNCTION passito_jobs.unfinished_parents(parents bigint[]) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM passito_jobs.jobs p
    WHERE p.id = ANY(parents) AND p.state IN ('blocked', 'pending', 'processing');
$$;


-- Blocked jobs that can never run, as in 0002: a finished-mode child behind a failed or
-- cancelled parent is not one of them (it waits for its other parents).
CREATE OR REPLACE FUNCTION passito_jobs.blocked_orphans()
RETURNS TABLE (id bigint, queue text, parent_id bigint, parent_state passito_jobs.job_state)
LANGUAGE sql STABLE AS $$
    SELECT c.id, c.queue, p.id, p.state
    FROM passito_jobs.jobs c
    CROSS JOIN LATERAL (
        SELECT p.id, p.state FROM passito_jobs.jobs p
        WHERE p.id = ANY(c.depends_on) AND p.state IN ('failed', 'cancelled')
        ORDER BY p.id
        LIMIT 1
    ) p
    WHERE c.state = 'blocked' AND c.depends_on_mode IS DISTINCT FROM 'finished'
    ORDER BY c.id;
$$;


-- Requeue failed or cancelled jobs, as in 0002. A finished-mode job waits for its unfinished
-- parents (a failed or cancelled one does not keep it back). A requeued job has not finished
-- any more: its blocked or pending finished-mode children wait for it again.
CREATE OR REPLACE FUNCTION passito_jobs.retry(ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    job record;
    waiting integer;
    dead_parent bigint;
    requeued bigint[] := '{}';
    woken text[] := '{}';
BEGIN
    FOR job IN
        SELECT j.id, j.queue, j.depends_on, j.depends_on_mode, j.has_dependents FROM passito_jobs.jobs j
        WHERE j.id = ANY(retry.ids) AND j.state IN ('failed', 'cancelled')
        ORDER BY j.id
        FOR UPDATE
    LOOP
        waiting := 0;
        dead_parent := NULL;
        IF cardinality(job.depends_on) > 0 THEN
            -- A parent pruned since is treated as done; lock_parents would reject it.
            SELECT l.waiting, l.failed_parent INTO waiting, dead_parent FROM passito_jobs.lock_parents(ARRAY(
                SELECT p.id FROM passito_jobs.jobs p WHERE p.id = ANY(job.depends_on))) l;
            IF job.depends_on_mode = 'finished' THEN
                dead_parent := NULL;
                waiting := passito_jobs.unfinished_parents(job.depends_on);
            END IF;
        END IF;
        CONTINUE WHEN dead_parent IS NOT NULL;
        UPDATE passito_jobs.jobs j
        SET state = CASE WHEN waiting > 0
                         THEN 'blocked'::passito_jobs.job_state ELSE 'pending'::passito_jobs.job_state END,
            waiting_on = waiting,
            attempts = 0, run_at = now(), finished_at = NULL, worker_id = NULL, claimed_at = NULL,
            heartbeat_at = NULL, result = NULL, progress = NULL
        WHERE j.id = job.id;
        IF job.has_dependents THEN
            UPDATE passito_jobs.jobs c
            SET waiting_on = c.waiting_on + 1, state = 'blocked'
            FROM passito_jobs.job_dependencies d
            WHERE d.parent_id = job.id AND c.id = d.child_id AND c.depends_on_mode = 'finished'
              AND c.state IN ('blocked', 'pending');
        END IF;
        requeued := requeued || job.id;
        IF waiting = 0 THEN
            woken := woken || job.queue;
        END IF;
    END LOOP;
    IF cardinality(woken) > 0 THEN
        PERFORM passito_jobs.notify_ready(ARRAY(SELECT DISTINCT q FROM unnest(woken) AS q));
    END IF;
    RETURN requeued;
END;
$$;


-- dispatch gains unique_for, unique_mode and depends_on_mode, at the end and with defaults:
-- callers that name their arguments or pass the first ones by position keep working. The old
-- signature is dropped, so no overload is left behind.
DROP FUNCTION passito_jobs.dispatch(text, jsonb, text, integer, timestamptz, bigint[], integer, text, text,
                                    text[], jsonb);

-- Dispatch one job in the caller's transaction and return its id (as in 0008, with the unique
-- modes and the dependency mode). With unique_key: while a job with that key is not finished
-- (and, with unique_for, one finished less than unique_for ago), return that job's id; with
-- unique_mode 'replace', an unfinished one that has not started takes the new payload and run_at.
--
-- Why no duplicate slips through (docs/architecture.md, "Unique jobs"): two unfinished jobs of a
-- key are one index entry too many (jobs_unique_key_idx), so the insert of the second waits for
-- the first's transaction and then does nothing (and the loop returns or replaces the first).
-- A finished job is not in that index: with unique_for, dispatches of a key take a transaction
-- advisory lock on it first, so the check of the one that waited starts after the other committed.
CREATE FUNCTION passito_jobs.dispatch(
    job_type      text,
    payload       jsonb DEFAULT '{}'::jsonb,
    queue         text DEFAULT 'default',
    priority      integer DEFAULT 0,
    run_at        timestamptz DEFAULT NULL,
    depends_on    bigint[] DEFAULT '{}',
    max_attempts  integer DEFAULT 3,
    unique_key    text DEFAULT NULL,
    concurrency_key text DEFAULT NULL,
    tags          text[] DEFAULT NULL,
    metadata      jsonb DEFAULT NULL,
    unique_for    interval DEFAULT NULL,
    unique_mode   text DEFAULT 'keep',
    depends_on_mode text DEFAULT 'completed'
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    parents     bigint[];
    dep         record;
    waiting     integer := 0;
    new_state   passito_jobs.job_state := 'pending';
    new_error   text;
    new_id      bigint;
    locked      boolean := false;
    problem     text := coalesce(
        passito_jobs.job_problem(dispatch.job_type, dispatch.payload, dispatch.queue, dispatch.run_at,
                                 dispatch.depends_on, dispatch.max_attempts, dispatch.unique_key),
        CASE WHEN dispatch.concurrency_key IS NOT NULL
             THEN passito_jobs.name_problem('concurrency_key', dispatch.concurrency_key) END,
        passito_jobs.tags_problem(dispatch.tags),
        passito_jobs.metadata_problem(dispatch.metadata),
        passito_jobs.flow_problem(dispatch.unique_key, dispatch.unique_for, dispatch.unique_mode,
                                  dispatch.depends_on_mode));
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'check_violation';
    END IF;
    parents := ARRAY(SELECT DISTINCT x FROM unnest(coalesce(dispatch.depends_on, '{}')) AS x ORDER BY x);
    IF dispatch.unique_for IS NOT NULL THEN
        -- 0x70617373 ("pass"): the namespace of these locks; the key's hash picks the lock.
        PERFORM pg_advisory_xact_lock(1885434739, hashtext(dispatch.unique_key));
    END IF;

    LOOP
        IF dispatch.unique_key IS NOT NULL THEN
            new_id := passito_jobs.unique_match(dispatch.unique_key, dispatch.unique_for, dispatch.unique_mode,
                                                dispatch.payload, dispatch.run_at);
            IF new_id IS NOT NULL THEN
                RETURN new_id;
            END IF;
        END IF;

        IF cardinality(parents) > 0 AND NOT locked THEN
            locked := true;
            SELECT * INTO dep FROM passito_jobs.lock_parents(parents);
            waiting := dep.waiting;
            IF dispatch.depends_on_mode = 'finished' THEN
                waiting := passito_jobs.unfinished_parents(parents);
            ELSIF dep.failed_parent IS NOT NULL THEN
                new_state := 'failed';
                new_error := format('parent job #%s %s', dep.failed_parent, dep.failed_state);
            END IF;
            IF new_state = 'pending' AND waiting > 0 THEN
                new_state := 'blocked';
            END IF;
        END IF;

        INSERT INTO passito_jobs.jobs AS j
            (queue, type, payload, priority, state, run_at, max_attempts, depends_on,
             waiting_on, unique_key, last_error, finished_at, concurrency_key, tags, metadata,
             depends_on_mode)
        VALUES
            (dispatch.queue, dispatch.job_type, dispatch.payload, coalesce(dispatch.priority, 0), new_state,
             coalesce(dispatch.run_at, now()), dispatch.max_attempts, parents, waiting,
             dispatch.unique_key, new_error,
             CASE WHEN new_state = 'failed' THEN now() END, dispatch.concurrency_key,
             nullif(dispatch.tags, '{}'), nullif(dispatch.metadata, '{}'::jsonb),
             CASE WHEN cardinality(parents) > 0 THEN dispatch.depends_on_mode END)
        ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('blocked', 'pending', 'processing')
        DO NOTHING
        RETURNING j.id INTO new_id;
        -- Nothing inserted: another transaction holds an unfinished job with this key; look again.
        EXIT WHEN new_id IS NOT NULL;
    END LOOP;

    IF cardinality(parents) > 0 THEN
        INSERT INTO passito_jobs.job_dependencies (child_id, parent_id)
        SELECT new_id, p FROM unnest(parents) AS p;
    END IF;
    IF new_state = 'pending' AND coalesce(dispatch.run_at, now()) <= now() THEN
        PERFORM passito_jobs.notify_ready(ARRAY[dispatch.queue]);
    END IF;
    RETURN new_id;
END;
$$;


-- The job a dispatch with `unique_key` returns instead of a new one, or NULL: the unfinished
-- job of the key (with mode 'replace', given `payload` and `run_at` first if it has not started;
-- a processing one is left as it is), else, with `unique_for`, the latest job of the key that
-- finished within that window.
CREATE FUNCTION passito_jobs.unique_match(unique_key text, unique_for interval, unique_mode text,
                                          payload jsonb, run_at timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    hit record;
BEGIN
    LOOP
        SELECT j.id, j.state INTO hit FROM passito_jobs.jobs j
        WHERE j.unique_key = unique_match.unique_key AND j.state IN ('blocked', 'pending', 'processing');
        EXIT WHEN NOT FOUND;
        IF unique_match.unique_mode <> 'replace' OR hit.state = 'processing' THEN
            RETURN hit.id;
        END IF;
        UPDATE passito_jobs.jobs j
        SET payload = unique_match.payload, run_at = coalesce(unique_match.run_at, now())
        WHERE j.id = hit.id AND j.state IN ('blocked', 'pending')
        RETURNING j.id, j.state, j.queue, j.run_at INTO hit;
        IF FOUND THEN
            IF hit.state = 'pending' AND hit.run_at <= now() THEN
                PERFORM passito_jobs.notify_ready(ARRAY[hit.queue]);
            END IF;
            RETURN hit.id;
        END IF;
        -- It started (or ended) while we waited for its row: look again.
    END LOOP;
    IF unique_match.unique_for IS NOT NULL THEN
        SELECT j.id INTO hit FROM passito_jobs.jobs j
        WHERE j.unique_key = unique_match.unique_key AND j.state IN ('completed', 'failed', 'cancelled')
          AND j.finished_at >= now() - unique_match.unique_for
        ORDER BY j.finished_at DESC
        LIMIT 1;
        IF FOUND THEN
            RETURN hit.id;
        END IF;
    END IF;
    RETURN NULL;
END;
$$;


-- claim also returns the outcomes of a finished-mode child's parents (NULL for other jobs).
-- A new column of the result means a new function: a worker of the previous release selects
-- the columns it knows by name and keeps working while the new one rolls out.
DROP FUNCTION passito_jobs.claim(text, text[], integer);
DROP FUNCTION passito_jobs.claim_limited(text, text[], integer);

-- As in 0008, with the parents column.
CREATE FUNCTION passito_jobs.claim_limited(worker text, queues text[], batch integer)
RETURNS TABLE (id bigint, queue text, type text, payload jsonb, priority integer,
               attempts integer, max_attempts integer, waited_seconds double precision, metadata jsonb,
               parents jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q passito_jobs.queues;
    locked passito_jobs.queues[] := '{}';
    limited_names text[] := '{}';
    allowance integer;
    candidates bigint[] := '{}';
    free text[];
    pace_at timestamptz;
    started timestamptz;
BEGIN
    FOR q IN
        SELECT * FROM passito_jobs.queues l
        WHERE l.limited AND (claim_limited.queues IS NULL OR l.name = ANY(claim_limited.queues))
        ORDER BY l.name
        FOR UPDATE
    LOOP
        locked := locked || q;
    END LOOP;
    -- Every count below is a statement that starts after all the locks are held.
    pace_at := clock_timestamp();
    FOREACH q IN ARRAY locked LOOP
        limited_names := limited_names || q.name;
        allowance := passito_jobs.queue_allowance(q, claim_limited.batch, pace_at);
        IF allowance > 0 THEN
            candidates := candidates || passito_jobs.queue_candidates(q, allowance);
        END IF;
    END LOOP;
    free := ARRAY(SELECT f FROM unnest(coalesce(claim_limited.queues, passito_jobs.pending_queues())) AS f
                  WHERE f <> ALL(limited_names));
    IF cardinality(free) > 0 THEN
        candidates := candidates || ARRAY(
            SELECT r.id FROM passito_jobs.jobs r
            WHERE r.state = 'pending' AND r.run_at <= now() AND r.queue = ANY(free)
            ORDER BY r.priority DESC, r.run_at, r.id
            LIMIT claim_limited.batch
            FOR UPDATE SKIP LOCKED);
    END IF;
    IF cardinality(candidates) = 0 THEN
        RETURN;
    END IF;
    started := clock_timestamp();
    RETURN QUERY
    WITH picked AS (
        SELECT r.id FROM passito_jobs.jobs r
        WHERE r.id = ANY(candidates) AND r.state = 'pending' AND r.run_at <= now()
        ORDER BY r.priority DESC, r.run_at, r.id
        LIMIT claim_limited.batch
        FOR UPDATE SKIP LOCKED
    ),
    claimed AS (
        UPDATE passito_jobs.jobs j
        SET state = 'processing', attempts = j.attempts + 1, worker_id = claim_limited.worker,
            claimed_at = started, heartbeat_at = started, started_at = coalesce(j.started_at, started)
        FROM picked p
        WHERE j.id = p.id
        RETURNING j.id, j.queue, j.type, j.payload, j.priority, j.attempts, j.max_attempts, j.run_at,
                  extract(epoch FROM clock_timestamp() - greatest(j.run_at, j.created_at)) AS waited,
                  j.metadata,
                  CASE WHEN j.depends_on_mode = 'finished' THEN passito_jobs.parent_outcomes(j.depends_on) END
                      AS parents
    ),
    paced AS (
        UPDATE passito_jobs.queues u
        SET rate_next_at = passito_jobs.rate_base(u, started) + (u.rate_period / u.rate_limit) * k.n
        FROM (SELECT c.queue, count(*) AS n FROM claimed c GROUP BY c.queue) k
        WHERE u.name = k.queue AND u.rate_limit IS NOT NULL
    )
    SELECT c.id, c.queue, c.type, c.payload, c.priority, c.attempts, c.max_attempts,
           c.waited::double precision, c.metadata, c.parents
    FROM claimed c
    ORDER BY c.priority DESC, c.run_at, c.id;
END;
$$;


CREATE FUNCTION passito_jobs.claim(worker text, queues text[], batch integer)
RETURNS TABLE (id bigint, queue text, type text, payload jsonb, priority integer,
               attempts integer, max_attempts integer, waited_seconds double precision, metadata jsonb,
               parents jsonb)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF batch IS NULL OR batch NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 10000, got %', coalesce(batch::text, 'null')
            USING ERRCODE = 'check_violation';
    END IF;
    IF EXISTS (SELECT 1 FROM passito_jobs.queues l
               WHERE l.limited AND (claim.queues IS NULL OR l.name = ANY(claim.queues))) THEN
        RETURN QUERY SELECT * FROM passito_jobs.claim_limited(claim.worker, claim.queues, claim.batch);
        RETURN;
    END IF;
    -- Two statements rather than one with `queues IS NULL OR ...`, so each keeps the plan
    -- that walks its index in claim order.
    IF queues IS NULL THEN
        RETURN QUERY
        WITH picked AS (
            SELECT r.id FROM passito_jobs.jobs r
            WHERE r.state = 'pending' AND r.run_at <= now()
            ORDER BY r.priority DESC, r.run_at, r.id
            LIMIT claim.batch
            FOR UPDATE SKIP LOCKED
        ),
        claimed AS (
            UPDATE passito_jobs.jobs j
            SET state = 'processing', attempts = j.attempts + 1, worker_id = claim.worker,
                claimed_at = now(), heartbeat_at = now(), started_at = coalesce(j.started_at, now())
            FROM picked p
            WHERE j.id = p.id
            RETURNING j.id, j.queue, j.type, j.payload, j.priority, j.attempts, j.max_attempts, j.run_at,
                      extract(epoch FROM clock_timestamp() - greatest(j.run_at, j.created_at)) AS waited,
                      j.metadata,
                  CASE WHEN j.depends_on_mode = 'finished' THEN passito_jobs.parent_outcomes(j.depends_on) END
                      AS parents
        )
        SELECT c.id, c.queue, c.type, c.payload, c.priority, c.attempts, c.max_attempts,
               c.waited::double precision, c.metadata, c.parents
        FROM claimed c
        ORDER BY c.priority DESC, c.run_at, c.id;
    ELSE
        RETURN QUERY
        WITH picked AS (
            SELECT r.id FROM passito_jobs.jobs r
            WHERE r.state = 'pending' AND r.run_at <= now()
              AND r.queue = ANY(claim.queues)
            ORDER BY r.priority DESC, r.run_at, r.id
            LIMIT claim.batch
            FOR UPDATE SKIP LOCKED
        ),
        claimed AS (
            UPDATE passito_jobs.jobs j
            SET state = 'processing', attempts = j.attempts + 1, worker_id = claim.worker,
                claimed_at = now(), heartbeat_at = now(), started_at = coalesce(j.started_at, now())
            FROM picked p
            WHERE j.id = p.id
            RETURNING j.id, j.queue, j.type, j.payload, j.priority, j.attempts, j.max_attempts, j.run_at,
                      extract(epoch FROM clock_timestamp() - greatest(j.run_at, j.created_at)) AS waited,
                      j.metadata,
                  CASE WHEN j.depends_on_mode = 'finished' THEN passito_jobs.parent_outcomes(j.depends_on) END
                      AS parents
        )
        SELECT c.id, c.queue, c.type, c.payload, c.priority, c.attempts, c.max_attempts,
               c.waited::double precision, c.metadata, c.parents
        FROM claimed c
        ORDER BY c.priority DESC, c.run_at, c.id;
    END IF;
END;
$$;
