-- passito-jobs: tags and metadata on jobs, and the trace context of the dispatcher.
--
-- tags      text[]: labels to find jobs by (`outpass:4711`, `hostel:ganga`); NULL when none.
-- metadata  jsonb:  a JSON object about the job, not for its handler (the payload is): who
--                   dispatched it, and the W3C trace context (`traceparent`, `tracestate`) of
--                   the request that did, which the worker's attempt span is linked to; NULL
--                   when none.
--
-- The limits (at most 20 tags of at most 100 characters, metadata at most 16 KiB of JSON text)
-- are the same as Python's (src/passito_jobs/queue/limits.py), with the same messages, checked
-- by the functions as in 0002 (no table constraint: old rows stay readable and runnable).
-- NULL rather than empty values: a job without them stores nothing, and the partial GIN index
-- below holds only tagged jobs, so dispatching an untagged job costs no index entry.

ALTER TABLE passito_jobs.jobs ADD COLUMN tags text[], ADD COLUMN metadata jsonb;

-- `tags @> ARRAY['outpass:4711']` (jobs list --tag) implies `tags IS NOT NULL` (the operator is
-- strict), so the planner uses this index without being told.
CREATE INDEX jobs_tags_idx ON passito_jobs.jobs USING gin (tags) WHERE tags IS NOT NULL;


-- Why tags are refused, or NULL: at most 20, each non-blank text of at most 100 characters
-- without control characters; `tags[n]` names the first bad one (counted from 0, as in Python).
CREATE FUNCTION passito_jobs.tags_problem(tags text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    tag text;
    n integer := 0;
BEGIN
    IF tags IS NULL THEN
        RETURN NULL;
    END IF;
    IF cardinality(tags) > 20 THEN
        RETURN format('tags must be at most 20, got %s', cardinality(tags));
    END IF;
    FOREACH tag IN ARRAY tags LOOP
        IF tag IS NULL
           OR tag ~ '^[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$' THEN
            RETURN format('tags[%s] must be a non-empty string', n);
        ELSIF char_length(tag) > 100 THEN
            RETURN format('tags[%s] must be at most 100 characters, got %s', n, char_length(tag));
        ELSIF tag ~ '[\u0001-\u001f\u007f-\u009f]' THEN
            RETURN format('tags[%s] must not contain control characters', n);
        END IF;
        n := n + 1;
    END LOOP;
    RETURN NULL;
END;
$$;


-- Why metadata is refused, or NULL: a JSON object of at most 16384 bytes of JSON text, nested
-- at most 100 levels; a `traceparent` member is a W3C traceparent, a `tracestate` member text of
-- at most 512 characters (the worker links its span to them).
CREATE FUNCTION passito_jobs.metadata_problem(metadata jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    size integer;
BEGIN
    IF metadata IS NULL THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(metadata) <> 'object' THEN
        RETURN format('metadata must be a JSON object, got %s', jsonb_typeof(metadata));
    END IF;
    size := octet_length(metadata::text);
    IF size > 16384 THEN
        RETURN format('metadata must be at most 16384 bytes of JSON text, got %s', size);
    END IF;
    IF jsonb_path_exists(metadata, 'strict $.**{101}') THEN
        RETURN 'metadata must not be nested more than 100 levels deep';
    END IF;
    IF metadata ? 'traceparent' AND (jsonb_typeof(metadata -> 'traceparent') <> 'string'
        OR (metadata ->> 'traceparent') !~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$') THEN
        RETURN 'metadata traceparent must be a W3C traceparent (00-<32 hex digits>-<16 hex digits>-<2 hex digits>)';
    END IF;
    IF metadata ? 'tracestate' AND (jsonb_typeof(metadata -> 'tracestate') <> 'string'
        OR char_length(metadata ->> 'tracestate') > 512) THEN
        RETURN 'metadata tracestate must be a string of at most 512 characters';
    END IF;
    RETURN NULL;
END;
$$;


-- dispatch gains `tags` and `metadata`, at the end and with defaults: callers that name their
-- arguments (docs/dispatching.md) or pass the first ones by position keep working. The old
-- signature is dropped, so no overload is left behind.
DROP FUNCTION passito_jobs.dispatch(text, jsonb, text, integer, timestamptz, bigint[], integer, text, text);

-- Dispatch one job in the caller's transaction and return its id (as in 0007, with tags and
-- metadata). With unique_key: while a job with that key is not finished, return that job's id.
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
    metadata      jsonb DEFAULT NULL
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
    problem     text := coalesce(
        passito_jobs.job_problem(dispatch.job_type, dispatch.payload, dispatch.queue, dispatch.run_at,
                                 dispatch.depends_on, dispatch.max_attempts, dispatch.unique_key),
        CASE WHEN dispatch.concurrency_key IS NOT NULL
             THEN passito_jobs.name_problem('concurrency_key', dispatch.concurrency_key) END,
        passito_jobs.tags_problem(dispatch.tags),
        passito_jobs.metadata_problem(dispatch.metadata));
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
             waiting_on, unique_key, last_error, finished_at, concurrency_key, tags, metadata)
        VALUES
            (dispatch.queue, dispatch.job_type, dispatch.payload, coalesce(dispatch.priority, 0), new_state,
             coalesce(dispatch.run_at, now()), dispatch.max_attempts, parents, waiting,
             dispatch.unique_key, new_error,
             CASE WHEN new_state = 'failed' THEN now() END, dispatch.concurrency_key,
             nullif(dispatch.tags, '{}'), nullif(dispatch.metadata, '{}'::jsonb))
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


-- claim also returns each job's metadata (NULL for most jobs), for the attempt's trace link.
-- A new column of the result means a new function: a worker of the previous release selects
-- the columns it knows by name and keeps working while the new one rolls out.
DROP FUNCTION passito_jobs.claim(text, text[], integer);
DROP FUNCTION passito_jobs.claim_limited(text, text[], integer);

-- As in 0007 (flow control), with the metadata column.
CREATE FUNCTION passito_jobs.claim_limited(worker text, queues text[], batch integer)
RETURNS TABLE (id bigint, queue text, type text, payload jsonb, priority integer,
               attempts integer, max_attempts integer, waited_seconds double precision, metadata jsonb)
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
                  j.metadata
    ),
    paced AS (
        UPDATE passito_jobs.queues u
        SET rate_next_at = passito_jobs.rate_base(u, started) + (u.rate_period / u.rate_limit) * k.n
        FROM (SELECT c.queue, count(*) AS n FROM claimed c GROUP BY c.queue) k
        WHERE u.name = k.queue AND u.rate_limit IS NOT NULL
    )
    SELECT c.id, c.queue, c.type, c.payload, c.priority, c.attempts, c.max_attempts,
           c.waited::double precision, c.metadata
    FROM claimed c
    ORDER BY c.priority DESC, c.run_at, c.id;
END;
$$;


CREATE FUNCTION passito_jobs.claim(worker text, queues text[], batch integer)
RETURNS TABLE (id bigint, queue text, type text, payload jsonb, priority integer,
               attempts integer, max_attempts integer, waited_seconds double precision, metadata jsonb)
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
                      j.metadata
        )
        SELECT c.id, c.queue, c.type, c.payload, c.priority, c.attempts, c.max_attempts,
               c.waited::double precision, c.metadata
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
                      j.metadata
        )
        SELECT c.id, c.queue, c.type, c.payload, c.priority, c.attempts, c.max_attempts,
               c.waited::double precision, c.metadata
        FROM claimed c
        ORDER BY c.priority DESC, c.run_at, c.id;
    END IF;
END;
$$;
