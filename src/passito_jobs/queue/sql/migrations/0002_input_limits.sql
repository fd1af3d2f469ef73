-- passito-jobs: one set of input limits, the same as Python's (src/passito_jobs/queue/limits.py),
-- with the same messages; docs/dispatching.md lists them.
--
-- The functions check new input; the table gets no new constraints. A constraint is checked
-- again on every UPDATE of a row, so a row stored before this migration (or by hand) outside a
-- limit would make claim, complete or rescue fail, for every job of the batch. Such rows stay
-- readable and runnable instead.


-- The largest payload, in bytes of its JSON text: the custom setting
-- passito_jobs.max_payload_bytes, 1 MiB when unset. An administrator sets it per database
-- (ALTER DATABASE passito SET passito_jobs.max_payload_bytes = '4194304'), like the Python
-- side's PASSITO_MAX_PAYLOAD_BYTES.
CREATE FUNCTION passito_jobs.max_payload_bytes() RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    raw text := btrim(coalesce(current_setting('passito_jobs.max_payload_bytes', true), ''));
BEGIN
    IF raw = '' THEN
        RETURN 1048576;
    END IF;
    IF raw !~ '^[0-9]{1,9}$' OR raw::integer NOT BETWEEN 1 AND 104857600 THEN
        RAISE EXCEPTION 'passito_jobs.max_payload_bytes must be a whole number from 1 to 104857600, got %', raw
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN raw::integer;
END;
$$;


-- Why a job type or queue name is refused, or NULL: non-blank (whitespace as Python's
-- str.isspace() knows it), at most 128 characters, no control characters (Unicode Cc).
CREATE FUNCTION passito_jobs.name_problem(what text, name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN name IS NULL
          OR name ~ '^[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$'
            THEN what || ' must be a non-empty string'
        WHEN char_length(name) > 128
            THEN format('%s must be at most 128 characters, got %s', what, char_length(name))
        WHEN name ~ '[\u0001-\u001f\u007f-\u009f]'
            THEN what || ' must not contain control characters'
    END;
$$;


-- Why a payload is refused, or NULL: a JSON object of at most max_payload_bytes() bytes of
-- JSON text, no value nested more than 100 levels deep (Python's decoder, which loads it in
-- the worker, stops near 1,000).
CREATE FUNCTION passito_jobs.payload_problem(payload jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    size integer;
    max_size integer := passito_jobs.max_payload_bytes();
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RETURN format('payload must be a JSON object, got %s', coalesce(jsonb_typeof(payload), 'null'));
    END IF;
    size := octet_length(payload::text);
    IF size > max_size THEN
        RETURN format('payload must be at most %s bytes of JSON text, got %s', max_size, size);
    END IF;
    IF jsonb_path_exists(payload, 'strict $.**{101}') THEN
        RETURN 'payload must not be nested more than 100 levels deep';
    END IF;
    RETURN NULL;
END;
$$;


-- Why a job is refused, or NULL: every rule of `dispatch` except the existence of the parents,
-- in the order Python checks them.
CREATE FUNCTION passito_jobs.job_problem(
    job_type      text,
    payload       jsonb,
    queue         text,
    run_at        timestamptz,
    depends_on    bigint[],
    max_attempts  integer,
    unique_key    text
) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    problem text;
    bad_parent bigint;
BEGIN
    problem := coalesce(passito_jobs.name_problem('job type', job_type),
                        CASE WHEN payload IS NULL OR jsonb_typeof(payload) <> 'object'
                             THEN passito_jobs.payload_problem(payload) END,
                        passito_jobs.name_problem('queue', queue));
    IF problem IS NOT NULL THEN
        RETURN problem;
    END IF;
    IF run_at IS NOT NULL AND (NOT isfinite(run_at) OR run_at < '1970-01-01 00:00:00+00'
                               OR run_at >= '10000-01-01 00:00:00+00') THEN
        RETURN format('run_at must be between 1970-01-01 and 9999-12-31 (UTC), got %s',
                      CASE WHEN isfinite(run_at)
                           THEN to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC'
                           ELSE run_at::text END);
    END IF;
    IF max_attempts IS NULL THEN
        RETURN 'max_attempts must be a whole number, got null';
    ELSIF max_attempts < 1 THEN
        RETURN format('max_attempts must be at least 1, got %s', max_attempts);
    ELSIF max_attempts > 1000 THEN
        RETURN format('max_attempts must be at most 1000, got %s', max_attempts);
    END IF;
    IF array_position(depends_on, NULL) IS NOT NULL THEN
        RETURN 'depends_on must hold job ids (positive integers), got null';
    END IF;
    SELECT x INTO bad_parent FROM unnest(depends_on) WITH ORDINALITY AS u(x, n) WHERE x < 1 ORDER BY n LIMIT 1;
    IF FOUND THEN
        RETURN format('depends_on must hold job ids (positive integers), got %s', bad_parent);
    END IF;
    IF unique_key = '' THEN
        RETURN 'unique_key must be a non-empty string';
    ELSIF char_length(unique_key) > 512 THEN
        RETURN format('unique_key must be at most 512 characters, got %s', char_length(unique_key));
    END IF;
    RETURN passito_jobs.payload_problem(payload);
END;
$$;


-- Wake the workers of a queue. A name too long for a NOTIFY payload (8000 bytes; only a row
-- from before the 128-character limit can have one) is sent as '': "some queue", which wakes
-- every worker that serves all queues, so rescue or retry never fails on it.
CREATE OR REPLACE FUNCTION passito_jobs.notify_ready(queues text[]) RETURNS void
LANGUAGE sql AS $$
    SELECT pg_notify('passito_jobs', CASE WHEN octet_length(q) < 8000 THEN q ELSE '' END)
    FROM unnest(queues) AS q;
$$;


-- Dispatch one job in the caller's transaction and return its id (as in 0001, with the limits).
-- With unique_key: while a job with that key is not finished, return that job's id instead.
CREATE OR REPLACE FUNCTION passito_jobs.dispatch(
    job_type      text,
    payload       jsonb DEFAULT '{}'::jsonb,
    queue         text DEFAULT 'default',
    priority      integer DEFAULT 0,
    run_at        timestamptz DEFAULT NULL,
    depends_on    bigint[] DEFAULT '{}',
    max_attempts  integer DEFAULT 3,
    unique_key    text DEFAULT NULL
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
    problem     text := passito_jobs.job_problem(dispatch.job_type, dispatch.payload, dispatch.queue,
                                                 dispatch.run_at, dispatch.depends_on,
                                                 dispatch.max_attempts, dispatch.unique_key);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'check_violation';
    END IF;
    parents := ARRAY(SELECT DISTINCT x FROM unnest(coalesce(dispatch.depends_on, '{}')) AS x ORDER BY x);

    IF unique_key IS NOT NULL THEN
        SELECT j.id INTO new_id FROM passito_jobs.jobs j
        WHERE j.unique_key = dispatch.unique_key AND j.state IN ('blocked', 'pending', 'processing');
        IF FOUND THEN
            RETURN new_id;
        END IF;
    END IF;

    IF cardinality(parents) > 0 THEN
        SELECT * INTO dep FROM passito_jobs.lock_parents(parents);
        waiting := dep.waiting;
        IF dep.failed_parent IS NOT NULL THEN
            new_state := 'failed';
            new_error := format('parent job #%s %s', dep.failed_parent, dep.failed_state);
        ELSIF waiting > 0 THEN
            new_state := 'blocked';
        END IF;
    END IF;

    LOOP
        INSERT INTO passito_jobs.jobs AS j
            (queue, type, payload, priority, state, run_at, max_attempts, depends_on,
             waiting_on, unique_key, last_error, finished_at)
        VALUES
            (dispatch.queue, dispatch.job_type, dispatch.payload, coalesce(dispatch.priority, 0), new_state,
             coalesce(dispatch.run_at, now()), dispatch.max_attempts, parents, waiting,
             dispatch.unique_key, new_error,
             CASE WHEN new_state = 'failed' THEN now() END)
        ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('blocked', 'pending', 'processing')
        DO NOTHING
        RETURNING j.id INTO new_id;
        EXIT WHEN new_id IS NOT NULL;
        -- Another transaction holds an unfinished job with this key.
        SELECT j.id INTO new_id FROM passito_jobs.jobs j
        WHERE j.unique_key = dispatch.unique_key AND j.state IN ('blocked', 'pending', 'processing');
        IF FOUND THEN
            RETURN new_id;
        END IF;
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


-- Claim up to `batch` (1 to 10,000) ready jobs for a worker, as in 0001: a NULL or huge batch
-- would lock and claim the whole ready set in one statement.
CREATE OR REPLACE FUNCTION passito_jobs.claim(worker text, queues text[], batch integer)
RETURNS TABLE (id bigint, queue text, type text, payload jsonb, priority integer,
               attempts integer, max_attempts integer, waited_seconds double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF batch IS NULL OR batch NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 10000, got %', coalesce(batch::text, 'null')
            USING ERRCODE = 'check_violation';
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
                      extract(epoch FROM clock_timestamp() - greatest(j.run_at, j.created_at)) AS waited
        )
        SELECT c.id, c.queue, c.type, c.payload, c.priority, c.attempts, c.max_attempts,
               c.waited::double precision
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
                      extract(epoch FROM clock_timestamp() - greatest(j.run_at, j.created_at)) AS waited
        )
        SELECT c.id, c.queue, c.type, c.payload, c.priority, c.attempts, c.max_attempts,
               c.waited::double precision
        FROM claimed c
        ORDER BY c.priority DESC, c.run_at, c.id;
    END IF;
END;
$$;


-- Requeue failed or cancelled jobs with their attempts reset; return the requeued ids.
-- A job whose parents are not all completed goes back to blocked and waits for them. A job
-- with a failed or cancelled parent is left as it is (not returned): requeued, it would wait
-- for that parent forever. Retry the parent in the same call (ids are handled in order, and
-- a parent's id is always lower than its child's) and both go back.
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
        SELECT j.id, j.queue, j.depends_on FROM passito_jobs.jobs j
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
        END IF;
        CONTINUE WHEN dead_parent IS NOT NULL;
        UPDATE passito_jobs.jobs j
        SET state = CASE WHEN waiting > 0
                         THEN 'blocked'::passito_jobs.job_state ELSE 'pending'::passito_jobs.job_state END,
            waiting_on = waiting,
            attempts = 0, run_at = now(), finished_at = NULL, worker_id = NULL, claimed_at = NULL,
            heartbeat_at = NULL, result = NULL, progress = NULL
        WHERE j.id = job.id;
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


-- Blocked jobs that can never run: a parent failed or was cancelled (so the job should have
-- failed with it) while the job stayed blocked, e.g. retried alone before this migration.
-- `passito-jobs health` reports them; cancel them, or retry their parents and then them.
CREATE FUNCTION passito_jobs.blocked_orphans()
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
    WHERE c.state = 'blocked'
    ORDER BY c.id;
$$;
