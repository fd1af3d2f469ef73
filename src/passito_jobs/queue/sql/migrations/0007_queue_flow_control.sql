-- passito-jobs: flow control across the fleet (docs/flow-control.md).
--
-- A queue's settings live in passito_jobs.queues, one row per queue, created the first time a
-- queue is paused, resumed or given a limit; a queue without a row has no limits. `claim`
-- enforces them, so they hold for every worker in every language, whatever their number:
--   paused           nothing is claimed; dispatch still works; jobs in flight finish;
--   concurrency      at most N jobs of the queue processing at once;
--   rate             at most rate_limit starts per rate_period, spaced evenly (GCRA, below);
--   key_concurrency  at most N processing jobs per concurrency key (given at dispatch).
--
-- Why the limits cannot be overshot (docs/architecture.md, "Flow control"): a claim that
-- includes a limited queue first locks that queue's row (FOR UPDATE, in name order, so two
-- claims never wait on each other in a cycle), then counts the queue's processing jobs in a new
-- statement, which sees every claim committed before the lock was granted. Only a claim holding
-- the row lock moves a job of that queue to processing, so the count cannot grow behind its
-- back; completion, failure, release, rescue and cancellation only shrink it, which makes the
-- count at worst too high for a moment, never too low. Nothing is counted in a column, so
-- nothing can drift: a worker killed with SIGKILL holds its jobs (and their slots) until the
-- rescue returns them to pending, and then the count is exact again by construction.
--
-- A queue with no limits pays one look at this (small) table per claim: `claim` keeps its old
-- statements for that case.

CREATE TABLE passito_jobs.queues (
    name            text PRIMARY KEY,
    paused          boolean NOT NULL DEFAULT false,
    concurrency     integer,
    rate_limit      integer,
    rate_period     interval,
    key_concurrency integer,
    -- The rate's state: the earliest moment the next job may start (GCRA's "theoretical
    -- arrival time"). Each start moves it on by rate_period / rate_limit.
    rate_next_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    limited         boolean GENERATED ALWAYS AS (
        paused OR concurrency IS NOT NULL OR rate_limit IS NOT NULL OR key_concurrency IS NOT NULL
    ) STORED,
    CONSTRAINT queues_rate_whole CHECK ((rate_limit IS NULL) = (rate_period IS NULL))
);

-- The job's concurrency key (NULL: none). Jobs without a key are not held back by
-- key_concurrency. Only jobs with a key enter the two indexes below, so queues that do not use
-- keys pay nothing for them.
ALTER TABLE passito_jobs.jobs ADD COLUMN concurrency_key text;

CREATE INDEX jobs_keyed_ready_idx ON passito_jobs.jobs (queue, concurrency_key, priority DESC, run_at, id)
    WHERE state = 'pending' AND concurrency_key IS NOT NULL;
CREATE INDEX jobs_keyed_processing_idx ON passito_jobs.jobs (queue, concurrency_key)
    WHERE state = 'processing' AND concurrency_key IS NOT NULL;


-- Why a queue limit is refused, or NULL: a whole number from 1 to 1,000,000 (NULL: no limit).
CREATE FUNCTION passito_jobs.queue_limit_problem(what text, value integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN value IS NULL THEN NULL
        WHEN value < 1 THEN format('%s must be at least 1, got %s', what, value)
        WHEN value > 1000000 THEN format('%s must be at most 1000000, got %s', what, value)
    END;
$$;

-- Why a rate is refused, or NULL: 1 to 1,000,000 starts per period of 1 ms to 7 days, and no
-- faster than 1,000,000 starts a second (the spacing must be at least a microsecond).
CREATE FUNCTION passito_jobs.rate_problem(rate_limit integer, rate_period interval) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN rate_limit IS NULL AND rate_period IS NULL THEN NULL
        WHEN rate_limit IS NULL OR rate_period IS NULL
            THEN 'rate needs both a number of jobs and a period (e.g. 50/1s)'
        WHEN rate_limit < 1 THEN format('rate must allow at least 1 job per period, got %s', rate_limit)
        WHEN rate_limit > 1000000 THEN format('rate must allow at most 1000000 jobs per period, got %s', rate_limit)
        WHEN rate_period < interval '1 millisecond' OR rate_period > interval '7 days'
            THEN 'rate period must be from 1ms to 7d'
        WHEN extract(epoch FROM rate_period) * 1000000 < rate_limit
            THEN 'rate must be at most 1000000 jobs per second'
    END;
$$;

-- Create the row of `queue` (no limits) when it has none, and lock it until the end of the
-- transaction; true when it was created.
CREATE FUNCTION passito_jobs.queue_row(queue text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    problem text := passito_jobs.name_problem('queue', queue);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO passito_jobs.queues AS q (name) VALUES (queue_row.queue) ON CONFLICT (name) DO NOTHING;
    IF FOUND THEN
        RETURN true;
    END IF;
    PERFORM FROM passito_jobs.queues q WHERE q.name = queue_row.queue FOR UPDATE;
    RETURN false;
END;
$$;

-- Pause a queue: claims take none of its jobs until it is resumed. Dispatch still works, and
-- jobs in flight finish. True when the queue had no row yet (it was created, paused).
CREATE FUNCTION passito_jobs.pause_queue(queue text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    created boolean;
BEGIN
    created := passito_jobs.queue_row(queue);
    UPDATE passito_jobs.queues q SET paused = true, updated_at = now() WHERE q.name = pause_queue.queue;
    RETURN created;
END;
$$;

-- Resume a paused queue and wake the workers that serve it (NOTIFY, on commit).
CREATE FUNCTION passito_jobs.resume_queue(queue text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    created boolean;
BEGIN
    created := passito_jobs.queue_row(queue);
    UPDATE passito_jobs.queues q SET paused = false, updated_at = now() WHERE q.name = resume_queue.queue;
    PERFORM passito_jobs.notify_ready(ARRAY[resume_queue.queue]);
    RETURN created;
END;
$$;

-- At most `concurrency` jobs of the queue processing at once, across all workers (NULL: no limit).
CREATE FUNCTION passito_jobs.set_queue_concurrency(queue text, concurrency integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    created boolean;
    problem text := passito_jobs.queue_limit_problem('concurrency', concurrency);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'check_violation';
    END IF;
    created := passito_jobs.queue_row(queue);
    UPDATE passito_jobs.queues q SET concurrency = set_queue_concurrency.concurrency, updated_at = now()
    WHERE q.name = set_queue_concurrency.queue;
    PERFORM passito_jobs.notify_ready(ARRAY[set_queue_concurrency.queue]);
    RETURN created;
END;
$$;

-- At most `rate_limit` jobs of the queue started per `rate_period`, evenly spaced (both NULL:
-- no limit). A new rate starts from now: its first job may start at once.
CREATE FUNCTION passito_jobs.set_queue_rate(queue text, rate_limit integer, rate_period interval) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    created boolean;
    problem text := passito_jobs.rate_problem(rate_limit, rate_period);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'check_violation';
    END IF;
    created := passito_jobs.queue_row(queue);
    UPDATE passito_jobs.queues q
    SET rate_limit = set_queue_rate.rate_limit, rate_period = set_queue_rate.rate_period,
        rate_next_at = NULL, updated_at = now()
    WHERE q.name = set_queue_rate.queue;
    PERFORM passito_jobs.notify_ready(ARRAY[set_queue_rate.queue]);
    RETURN created;
END;
$$;

-- At most `key_concurrency` processing jobs per concurrency key in the queue (NULL: no limit).
CREATE FUNCTION passito_jobs.set_queue_key_concurrency(queue text, key_concurrency integer) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    created boolean;
    problem text := passito_jobs.queue_limit_problem('key concurrency', key_concurrency);
BEGIN
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION '%', problem USING ERRCODE = 'check_violation';
    END IF;
    created := passito_jobs.queue_row(queue);
    UPDATE passito_jobs.queues q SET key_concurrency = set_queue_key_concurrency.key_concurrency, updated_at = now()
    WHERE q.name = set_queue_key_concurrency.queue;
    PERFORM passito_jobs.notify_ready(ARRAY[set_queue_key_concurrency.queue]);
    RETURN created;
END;
$$;


-- The rate's pacing (GCRA): jobs start rate_period / rate_limit apart. A claim that comes late
-- may catch up by at most `rate_burst` starts (50 ms worth of the rate, at least one), so any
-- window of the period holds at most rate_limit + rate_burst starts.
CREATE FUNCTION passito_jobs.rate_burst(rate_limit integer, rate_period interval) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT least(rate_limit, greatest(1, floor(rate_limit * 0.05 / extract(epoch FROM rate_period))::integer));
$$;

-- The moment the pacing counts from: the next start it allows, but no further back than
-- the burst allows catching up.
CREATE FUNCTION passito_jobs.rate_base(q passito_jobs.queues, at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(coalesce(q.rate_next_at, '-infinity'),
                    at - (q.rate_period / q.rate_limit) * (passito_jobs.rate_burst(q.rate_limit, q.rate_period) - 1));
$$;

-- How many jobs a claim may take from the locked limited queue `q` at `at`, at most `batch`.
CREATE FUNCTION passito_jobs.queue_allowance(q passito_jobs.queues, batch integer, at timestamptz)
RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    allowed integer := batch;
    running integer;
    base timestamptz;
BEGIN
    IF q.paused THEN
        RETURN 0;
    END IF;
    IF q.concurrency IS NOT NULL THEN
        SELECT count(*) INTO running FROM passito_jobs.jobs j WHERE j.state = 'processing' AND j.queue = q.name;
        allowed := least(allowed, q.concurrency - running);
    END IF;
    IF q.rate_limit IS NOT NULL AND allowed > 0 THEN
        base := passito_jobs.rate_base(q, at);
        IF base > at THEN
            RETURN 0;
        END IF;
        allowed := least(allowed, 1 + floor(extract(epoch FROM at - base)
                                            / extract(epoch FROM q.rate_period / q.rate_limit))::integer);
    END IF;
    RETURN greatest(allowed, 0);
END;
$$;

-- Up to `allowance` ready jobs of the limited queue `q` in claim order, skipping the jobs of
-- keys at their key_concurrency: each key with room offers its first jobs (found by a loose
-- scan of jobs_keyed_ready_idx, one probe per key), so a long backlog of one key never hides
-- the jobs of another.
CREATE FUNCTION passito_jobs.queue_candidates(q passito_jobs.queues, allowance integer) RETURNS bigint[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF q.key_concurrency IS NULL THEN
        RETURN ARRAY(
            SELECT r.id FROM passito_jobs.jobs r
            WHERE r.state = 'pending' AND r.run_at <= now() AND r.queue = q.name
            ORDER BY r.priority DESC, r.run_at, r.id
            LIMIT allowance);
    END IF;
    RETURN ARRAY(
        WITH RECURSIVE keys(k) AS (
            (SELECT r.concurrency_key FROM passito_jobs.jobs r
             WHERE r.state = 'pending' AND r.concurrency_key IS NOT NULL AND r.queue = q.name
             ORDER BY r.concurrency_key LIMIT 1)
            UNION ALL
            SELECT (SELECT r.concurrency_key FROM passito_jobs.jobs r
                    WHERE r.state = 'pending' AND r.concurrency_key IS NOT NULL AND r.queue = q.name
                      AND r.concurrency_key > keys.k
                    ORDER BY r.concurrency_key LIMIT 1)
            FROM keys WHERE keys.k IS NOT NULL
        ),
        running AS (
            SELECT r.concurrency_key AS k, count(*)::integer AS n FROM passito_jobs.jobs r
            WHERE r.state = 'processing' AND r.concurrency_key IS NOT NULL AND r.queue = q.name
            GROUP BY r.concurrency_key
        ),
        offered AS (
            SELECT c.id, c.priority, c.run_at
            FROM keys
            LEFT JOIN running ON running.k = keys.k
            CROSS JOIN LATERAL (
                SELECT r.id, r.priority, r.run_at FROM passito_jobs.jobs r
                WHERE r.state = 'pending' AND r.concurrency_key = keys.k AND r.queue = q.name
                  AND r.run_at <= now()
                ORDER BY r.priority DESC, r.run_at, r.id
                LIMIT greatest(q.key_concurrency - coalesce(running.n, 0), 0)
            ) c
            WHERE keys.k IS NOT NULL
            UNION ALL
            (SELECT r.id, r.priority, r.run_at FROM passito_jobs.jobs r
             WHERE r.state = 'pending' AND r.run_at <= now() AND r.queue = q.name AND r.concurrency_key IS NULL
             ORDER BY r.priority DESC, r.run_at, r.id
             LIMIT allowance)
        )
        SELECT o.id FROM offered o ORDER BY o.priority DESC, o.run_at, o.id LIMIT allowance);
END;
$$;

-- The queues with pending jobs (a loose scan of jobs_ready_by_queue_idx: one probe per queue).
CREATE FUNCTION passito_jobs.pending_queues() RETURNS text[]
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE qs(name) AS (
        (SELECT r.queue FROM passito_jobs.jobs r WHERE r.state = 'pending' ORDER BY r.queue LIMIT 1)
        UNION ALL
        SELECT (SELECT r.queue FROM passito_jobs.jobs r WHERE r.state = 'pending' AND r.queue > qs.name
                ORDER BY r.queue LIMIT 1)
        FROM qs WHERE qs.name IS NOT NULL
    )
    SELECT coalesce(array_agg(qs.name), '{}') FROM qs WHERE qs.name IS NOT NULL;
$$;

-- `claim` when at least one of the queues it serves has a limit: lock the limited queues' rows
-- (in name order), take from each what its limits allow, take from the other queues as usual,
-- and claim the best `batch` of them all in claim order. Each rate-limited queue's pacing moves
-- on by the jobs actually claimed from it. The jobs' start time is read after every count, so
-- a job that a count saw finish has a finished_at before the start of the job taking its slot:
-- the overlap of the recorded [started_at, finished_at] intervals never exceeds a limit either.
CREATE FUNCTION passito_jobs.claim_limited(worker text, queues text[], batch integer)
RETURNS TABLE (id bigint, queue text, type text, payload jsonb, priority integer,
               attempts integer, max_attempts integer, waited_seconds double precision)
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
                  extract(epoch FROM clock_timestamp() - greatest(j.run_at, j.created_at)) AS waited
    ),
    paced AS (
        UPDATE passito_jobs.queues u
        SET rate_next_at = passito_jobs.rate_base(u, started) + (u.rate_period / u.rate_limit) * k.n
        FROM (SELECT c.queue, count(*) AS n FROM claimed c GROUP BY c.queue) k
        WHERE u.name = k.queue AND u.rate_limit IS NOT NULL
    )
    SELECT c.id, c.queue, c.type, c.payload, c.priority, c.attempts, c.max_attempts,
           c.waited::double precision
    FROM claimed c
    ORDER BY c.priority DESC, c.run_at, c.id;
END;
$$;

-- Claim up to `batch` ready jobs for a worker (as in 0002), obeying the queues' flow control.
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


-- Each queue's flow control and what it holds back: its settings (NULL: no limit), its ready
-- and processing jobs, and `held_back`, the ready jobs a claim could not take right now because
-- the queue is paused, at its concurrency, or their key is at its key_concurrency (a rate paces
-- starts; it holds nothing back for good, and is not counted). Every queue with a row or with
-- pending or processing jobs; `queues` (NULL or empty: all) narrows it.
CREATE FUNCTION passito_jobs.queue_flow(queues text[] DEFAULT NULL)
RETURNS TABLE (queue text, paused boolean, concurrency integer, rate_limit integer, rate_period interval,
               key_concurrency integer, ready bigint, processing bigint, held_back bigint)
LANGUAGE sql STABLE AS $$
    -- Each count reads one partial index (as queue_stats does): pending jobs from
    -- jobs_ready_by_queue_idx, processing ones from jobs_processing_idx, and the keyed ones of
    -- queues with a key concurrency from jobs_keyed_ready_idx and jobs_keyed_processing_idx.
    WITH pending AS (
        SELECT j.queue, count(*) FILTER (WHERE j.run_at <= now()) AS ready
        FROM passito_jobs.jobs j
        WHERE j.state = 'pending'
          AND (queue_flow.queues IS NULL OR cardinality(queue_flow.queues) = 0 OR j.queue = ANY(queue_flow.queues))
        GROUP BY j.queue
    ),
    running AS (
        SELECT j.queue, count(*) AS processing
        FROM passito_jobs.jobs j
        WHERE j.state = 'processing'
          AND (queue_flow.queues IS NULL OR cardinality(queue_flow.queues) = 0 OR j.queue = ANY(queue_flow.queues))
        GROUP BY j.queue
    ),
    settings AS (
        SELECT l.* FROM passito_jobs.queues l
        WHERE queue_flow.queues IS NULL OR cardinality(queue_flow.queues) = 0 OR l.name = ANY(queue_flow.queues)
    ),
    key_held AS (
        SELECT s.name AS queue, sum(greatest(k.ready - greatest(s.key_concurrency - k.processing, 0), 0)) AS held
        FROM settings s
        CROSS JOIN LATERAL (
            SELECT x.k, sum(x.ready) AS ready, sum(x.processing) AS processing
            FROM (
                SELECT j.concurrency_key AS k, count(*) FILTER (WHERE j.run_at <= now()) AS ready,
                       0 AS processing
                FROM passito_jobs.jobs j
                WHERE j.state = 'pending' AND j.concurrency_key IS NOT NULL AND j.queue = s.name
                GROUP BY j.concurrency_key
                UNION ALL
                SELECT j.concurrency_key, 0, count(*)
                FROM passito_jobs.jobs j
                WHERE j.state = 'processing' AND j.concurrency_key IS NOT NULL AND j.queue = s.name
                GROUP BY j.concurrency_key
            ) x
            GROUP BY x.k
        ) k
        WHERE s.key_concurrency IS NOT NULL
        GROUP BY s.name
    ),
    merged AS (
        SELECT coalesce(s.name, c.queue) AS queue, coalesce(s.paused, false) AS paused, s.concurrency,
               s.rate_limit, s.rate_period, s.key_concurrency,
               coalesce(c.ready, 0) AS ready, coalesce(c.processing, 0) AS processing,
               coalesce(h.held, 0) AS key_held
        FROM settings s
        FULL JOIN (SELECT coalesce(p.queue, r.queue) AS queue, p.ready, r.processing
                   FROM pending p FULL JOIN running r ON r.queue = p.queue) c ON c.queue = s.name
        LEFT JOIN key_held h ON h.queue = coalesce(s.name, c.queue)
    )
    SELECT m.queue, m.paused, m.concurrency, m.rate_limit, m.rate_period, m.key_concurrency,
           m.ready, m.processing,
           (CASE WHEN m.paused THEN m.ready
                 WHEN m.concurrency IS NULL THEN m.key_held
                 ELSE m.ready - least(m.ready - m.key_held, greatest(m.concurrency - m.processing, 0))
            END)::bigint AS held_back
    FROM merged m
    ORDER BY m.queue;
$$;

-- The load the autoscalers scale on (as in 0003), counting only the ready jobs a claim could
-- take now: a paused queue's ready jobs, and those beyond a queue's concurrency or their key's
-- key_concurrency, would only give new workers nothing to do. Jobs in flight still count
-- (they occupy workers until they finish, paused queue or not).
CREATE OR REPLACE FUNCTION passito_jobs.load(queues text[] DEFAULT NULL)
RETURNS TABLE (ready bigint, processing bigint)
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(sum(f.ready - f.held_back), 0)::bigint, coalesce(sum(f.processing), 0)::bigint
    FROM passito_jobs.queue_flow(load.queues) f;
$$;


-- Dispatch (as in 0002) with the job's concurrency key as a new last argument.
DROP FUNCTION passito_jobs.dispatch(text, jsonb, text, integer, timestamptz, bigint[], integer, text);

CREATE FUNCTION passito_jobs.dispatch(
    job_type        text,
    payload         jsonb DEFAULT '{}'::jsonb,
    queue           text DEFAULT 'default',
    priority        integer DEFAULT 0,
    run_at          timestamptz DEFAULT NULL,
    depends_on      bigint[] DEFAULT '{}',
    max_attempts    integer DEFAULT 3,
    unique_key      text DEFAULT NULL,
    concurrency_key text DEFAULT NULL
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
        passito_jobs.job_problem(dispatch.job_type, dispatch.payload, dispatch.queue,
                                 dispatch.run_at, dispatch.depends_on,
                                 dispatch.max_attempts, dispatch.unique_key),
        CASE WHEN dispatch.concurrency_key IS NOT NULL
             THEN passito_jobs.name_problem('concurrency_key', dispatch.concurrency_key) END);
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
             waiting_on, unique_key, last_error, finished_at, concurrency_key)
        VALUES
            (dispatch.queue, dispatch.job_type, dispatch.payload, coalesce(dispatch.priority, 0), new_state,
             coalesce(dispatch.run_at, now()), dispatch.max_attempts, parents, waiting,
             dispatch.unique_key, new_error,
             CASE WHEN new_state = 'failed' THEN now() END, dispatch.concurrency_key)
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
