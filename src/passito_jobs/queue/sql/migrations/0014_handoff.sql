-- passito-jobs: handoff, a plain job dispatched while a worker waits goes to that worker.
--
-- An idle worker's pickup was: the dispatch commits and notifies `passito_jobs`; the worker's
-- listener wakes its claim loop; the claim loop claims the job in a round trip of its own. The
-- claim's round trip was a third of the pickup. Now a worker whose claim came back short of what
-- it asked for leaves its free slots in `waiting_workers`, and a plain job (no unique key, no
-- parents: insert_plain_job; Python's dispatch on a connection outside a transaction) that is due goes
-- straight to such a worker: inserted as `processing`, attempt 1, held by that worker, and sent
-- on the worker's own channel with everything its handler needs. The worker starts it when the
-- notification arrives, with no claim.
--
-- What keeps it honest:
-- * Only a worker that listens takes jobs this way: its listener's connection holds a session
--   advisory lock (namespace 1885434740, the worker's `lock_key`), and a dispatch hands a job only
--   to a worker whose lock is held. A worker that died or lost its listener's connection gets
--   nothing more: the next dispatch that finds its row deletes it, or, when it holds handed ids,
--   closes it (no slots) for the worker's next claim to take them back.
-- * Only from a dispatch that is its own transaction (Python's dispatch on an autocommit
--   connection outside a transaction block says so): the job reaches the worker as the statement
--   ends, never after a long transaction. The SQL dispatch() cannot know that of its caller and
--   never hands off.
-- * Only when the claim would take this job next: nothing of its priority due in its queue and
--   nothing pending of a higher one (older and higher jobs go first), and never in a queue with
--   flow control (paused, concurrency, rate or key limits): claim decides those.
-- * The row keeps the ids it was handed (`handed`), and each claim_or_wait takes the row back and
--   returns the handed jobs the worker does not name as known: a notification that never arrived
--   (the listener's connection broke after the commit) costs a poll interval, not a rescue.
-- * The worker runs a handed job only in a free slot, and gives it back (release) otherwise:
--   PASSITO_CONCURRENCY holds.
-- * The table is UNLOGGED: a row is a worker's promise for the next moments, with nothing to
--   keep across a crash or a failover (the rows are gone then, and workers fill them again at
--   their next claim).

CREATE UNLOGGED TABLE passito_jobs.waiting_workers (
    worker_id text PRIMARY KEY,
    channel   text NOT NULL,      -- the worker's NOTIFY channel for handed jobs
    lock_key  integer NOT NULL,   -- held (session advisory lock 1885434740, lock_key) while it listens
    queues    text[],             -- NULL: every queue
    slots     integer NOT NULL CHECK (slots >= 0),
    handed    bigint[] NOT NULL DEFAULT '{}'
);

-- A listening worker with a free slot for a job of `queue` and `priority`, locked for this
-- transaction, when the claim would take that job next: the queue has no flow control, no job of
-- that priority due, and no pending job of a higher one (due or not: so both tests are one step
-- of jobs_ready_by_queue_idx, however many delayed jobs the queue holds). NULL otherwise.
CREATE FUNCTION passito_jobs.waiting_worker(queue text, priority integer) RETURNS passito_jobs.waiting_workers
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    w passito_jobs.waiting_workers;
BEGIN
    LOOP
        SELECT * INTO w FROM passito_jobs.waiting_workers x
        WHERE x.slots > 0 AND (x.queues IS NULL OR waiting_worker.queue = ANY(x.queues))
        LIMIT 1
        FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        -- A shared lock granted means its listener holds none: the worker is gone, or its
        -- listener is reconnecting. Its row takes no more jobs; one that holds handed ids stays
        -- for the worker's next claim to take back (forget_waiting_workers drops it later if the
        -- worker never comes back).
        EXIT WHEN NOT pg_try_advisory_xact_lock_shared(1885434740, w.lock_key);
        IF cardinality(w.handed) = 0 THEN
            DELETE FROM passito_jobs.waiting_workers x WHERE x.worker_id = w.worker_id;
        ELSE
            UPDATE passito_jobs.waiting_workers x SET slots = 0 WHERE x.worker_id = w.worker_id;
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM passito_jobs.queues q WHERE q.name = waiting_worker.queue AND q.limited)
       OR EXISTS (SELECT 1 FROM passito_jobs.jobs r
                  WHERE r.state = 'pending' AND r.queue = waiting_worker.queue
                    AND r.priority = waiting_worker.priority AND r.run_at <= now())
       OR EXISTS (SELECT 1 FROM passito_jobs.jobs r
                  WHERE r.state = 'pending' AND r.queue = waiting_worker.queue
                    AND r.priority > waiting_worker.priority) THEN
        RETURN NULL;
    END IF;
    RETURN w;
END;
$$;

-- One plain job (no parents, no unique key), its arguments already checked: pending, with a
-- NOTIFY on `passito_jobs` when due; or, with `hand_off`, when due and a worker waits for its queue, processing
-- in that worker's hands, sent on its channel (three lines: [id, queue, type, priority,
-- attempt, max_attempts], the metadata, the payload; only [id] when that is 8000 bytes or more,
-- and the worker reads the job at its next claim).
CREATE FUNCTION passito_jobs.insert_plain_job(
    queue text, job_type text, payload jsonb, priority integer, run_at timestamptz,
    max_attempts integer, concurrency_key text, tags text[], metadata jsonb, hand_off boolean
) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    due      timestamptz := coalesce(insert_plain_job.run_at, now());
    w        passito_jobs.waiting_workers;
    new_id   bigint;
    message  text;
BEGIN
    -- Only a caller that knows its statement is its own transaction (`hand_off`: Python's
    -- dispatch on an autocommit connection outside a transaction block) may hand a job over: the
    -- lock on the worker's row then ends with the statement and the job reaches the worker at
    -- once. In a longer transaction the handed job would wait for the commit, and a transaction
    -- open past PASSITO_STUCK_AFTER would see it rescued as it arrived; the server cannot tell the
    -- two apart, so dispatch() (SQL callers) never hands off.
    IF hand_off AND due <= now() AND EXISTS (SELECT 1 FROM passito_jobs.waiting_workers) THEN
        w := passito_jobs.waiting_worker(insert_plain_job.queue, coalesce(insert_plain_job.priority, 0));
    END IF;
    INSERT INTO passito_jobs.jobs AS j
        (queue, type, payload, priority, run_at, max_attempts, concurrency_key, tags, metadata,
         state, attempts, worker_id, claimed_at, heartbeat_at, started_at)
    VALUES
        (insert_plain_job.queue, insert_plain_job.job_type, insert_plain_job.payload,
         coalesce(insert_plain_job.priority, 0), due, insert_plain_job.max_attempts,
         insert_plain_job.concurrency_key, nullif(insert_plain_job.tags, '{}'),
         nullif(insert_plain_job.metadata, '{}'::jsonb),
         CASE WHEN w.worker_id IS NULL THEN 'pending' ELSE 'processing' END::passito_jobs.job_state,
         CASE WHEN w.worker_id IS NULL THEN 0 ELSE 1 END, w.worker_id,
         CASE WHEN w.worker_id IS NOT NULL THEN now() END,
         CASE WHEN w.worker_id IS NOT NULL THEN clock_timestamp() END,
         CASE WHEN w.worker_id IS NOT NULL THEN now() END)
    RETURNING j.id INTO new_id;
    IF w.worker_id IS NULL THEN
        IF due <= now() THEN
            -- The queue's name is at most 128 characters (checked): a valid NOTIFY payload.
            PERFORM pg_notify('passito_jobs', insert_plain_job.queue);
        END IF;
        RETURN new_id;
    END IF;
    UPDATE passito_jobs.waiting_workers x
    SET slots = x.slots - 1, handed = x.handed || new_id
    WHERE x.worker_id = w.worker_id;
    message := json_build_array(new_id, insert_plain_job.queue, insert_plain_job.job_type,
                                coalesce(insert_plain_job.priority, 0), 1, insert_plain_job.max_attempts)::text
               || E'\n' || coalesce(nullif(insert_plain_job.metadata, '{}'::jsonb)::text, 'null')
               || E'\n' || insert_plain_job.payload::text;
    IF octet_length(message) >= 8000 THEN
        message := json_build_array(new_id)::text;
    END IF;
    PERFORM pg_notify(w.channel, message);
    RETURN new_id;
END;
$$;

-- A worker's claim: takes back its waiting row (unless a dispatch holds it right now), returns
-- the jobs handed to it that it does not name in `known` (flagged `handed`), claims up to
-- `batch` less those, and, when `channel` is given and fewer came than `batch`, leaves the
-- rest of its slots in waiting_workers.
CREATE FUNCTION passito_jobs.claim_or_wait(
    worker text, queues text[], batch integer, channel text, lock_key integer, known bigint[]
) RETURNS TABLE(id bigint, queue text, type text, payload jsonb, priority integer, attempts integer,
                max_attempts integer, waited_seconds double precision, metadata jsonb, parents jsonb,
                handed boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    mine     passito_jobs.waiting_workers;
    taken    integer := 0;
    claimed  integer := 0;
BEGIN
    SELECT * INTO mine FROM passito_jobs.waiting_workers x WHERE x.worker_id = claim_or_wait.worker
    FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        DELETE FROM passito_jobs.waiting_workers x WHERE x.worker_id = claim_or_wait.worker;
        IF cardinality(mine.handed) > 0 THEN
            RETURN QUERY
            SELECT j.id, j.queue, j.type, j.payload, j.priority, j.attempts, j.max_attempts,
                   0::double precision, j.metadata, NULL::jsonb, true
            FROM passito_jobs.jobs j
            WHERE j.id = ANY(mine.handed) AND j.id <> ALL(coalesce(claim_or_wait.known, '{}'))
              AND j.state IS NOT DISTINCT FROM 'processing' AND j.worker_id = claim_or_wait.worker;
            GET DIAGNOSTICS taken = ROW_COUNT;
        END IF;
    ELSIF EXISTS (SELECT 1 FROM passito_jobs.waiting_workers x WHERE x.worker_id = claim_or_wait.worker) THEN
        -- A dispatch is handing this worker a job now: the row stays, and the next claim takes it.
        channel := NULL;
    END IF;
    IF batch > taken THEN
        RETURN QUERY
        SELECT c.*, false FROM passito_jobs.claim(claim_or_wait.worker, claim_or_wait.queues,
                                                  claim_or_wait.batch - taken) c;
        GET DIAGNOSTICS claimed = ROW_COUNT;
    END IF;
    IF channel IS NOT NULL AND taken + claimed < batch THEN
        INSERT INTO passito_jobs.waiting_workers (worker_id, channel, lock_key, queues, slots)
        VALUES (claim_or_wait.worker, claim_or_wait.channel, claim_or_wait.lock_key,
                claim_or_wait.queues, claim_or_wait.batch - taken - claimed);
    END IF;
END;
$$;

-- The rows of workers gone (their listener's lock is free) that hold no handed job still
-- processing in that worker's name; how many. The maintenance runs it with the prune.
CREATE FUNCTION passito_jobs.forget_waiting_workers() RETURNS integer
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM passito_jobs.waiting_workers w
        WHERE NOT EXISTS (SELECT 1 FROM pg_locks l
                          WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1885434740
                            AND l.objid = w.lock_key::oid AND l.objsubid = 2
                            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
          AND NOT EXISTS (SELECT 1 FROM passito_jobs.jobs j
                          WHERE j.id = ANY(w.handed) AND j.state IS NOT DISTINCT FROM 'processing'
                            AND j.worker_id = w.worker_id)
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
$$;

-- A worker that stops waiting (shutdown): its row goes, and the jobs handed to it that it does
-- not name in `known` go back to pending (release: the attempt is not counted). How many.
CREATE FUNCTION passito_jobs.stop_waiting(worker text, known bigint[]) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    handed   bigint[];
    ids      bigint[];
    tries    integer[];
BEGIN
    DELETE FROM passito_jobs.waiting_workers x WHERE x.worker_id = stop_waiting.worker
    RETURNING x.handed INTO handed;
    IF coalesce(cardinality(handed), 0) = 0 THEN
        RETURN 0;
    END IF;
    SELECT array_agg(j.id), array_agg(j.attempts) INTO ids, tries
    FROM passito_jobs.jobs j
    WHERE j.id = ANY(handed) AND j.id <> ALL(coalesce(stop_waiting.known, '{}'))
      AND j.state IS NOT DISTINCT FROM 'processing' AND j.worker_id = stop_waiting.worker;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    RETURN passito_jobs.release(stop_waiting.worker, ids, tries);
END;
$$;

-- dispatch() as in 0013, its fast path now insert_plain_job.
CREATE OR REPLACE FUNCTION passito_jobs.dispatch(
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
    IF dispatch.unique_key IS NULL AND coalesce(cardinality(dispatch.depends_on), 0) = 0 THEN
        -- Most jobs: no key to dedupe on, no parents: insert_plain_job, without handoff (this
        -- function cannot tell whether its caller's transaction ends with the statement).
        RETURN passito_jobs.insert_plain_job(dispatch.queue, dispatch.job_type, dispatch.payload,
                                             dispatch.priority, dispatch.run_at, dispatch.max_attempts,
                                             dispatch.concurrency_key, dispatch.tags, dispatch.metadata,
                                             false);
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
