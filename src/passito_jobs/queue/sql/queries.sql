-- Named queries of the queue library (queue/store.py, queue/asyncstore.py), read by name
-- (queue/sqlfiles.py); each starts with a `-- name: <name>` line, and every column a caller
-- reads has a name. State transitions are SQL functions (migrations/), so the same rules serve
-- Python, the CLI and other languages.

-- name: dispatch
SELECT passito_jobs.dispatch(
    job_type => %(type)s, payload => %(payload)s, queue => %(queue)s, priority => %(priority)s,
    run_at => coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => coalesce(%(delay)s, 0))),
    depends_on => %(depends_on)s::bigint[], max_attempts => %(max_attempts)s,
    unique_key => %(unique_key)s, concurrency_key => %(concurrency_key)s, tags => %(tags)s::text[],
    metadata => %(metadata)s::jsonb,
    unique_for => make_interval(secs => %(unique_for)s::double precision), unique_mode => %(unique_mode)s,
    depends_on_mode => %(depends_on_mode)s)

-- name: insert_job
-- One plain job (no parents, no unique key) that dispatch.py has checked by the same rules as the
-- dispatch function: insert_plain_job, the function's own fast path, without the function's
-- checks. `hand_off`: the statement is its own transaction (autocommit, no transaction block),
-- so a worker waiting for the queue may take the job at once (migration 0014). Python callers are held
-- to PASSITO_MAX_PAYLOAD_BYTES, as with dispatch_many's COPY.
SELECT passito_jobs.insert_plain_job(
    %(queue)s, %(type)s, %(payload)s, %(priority)s,
    coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => coalesce(%(delay)s, 0))),
    %(max_attempts)s, %(concurrency_key)s, %(tags)s::text[], %(metadata)s::jsonb, %(hand_off)s)

-- name: reserve_ids
-- The server's clock and `count` fresh job ids, for a COPY of many jobs.
SELECT now() AS now, ARRAY(SELECT nextval(pg_get_serial_sequence('passito_jobs.jobs', 'id'))
                           FROM generate_series(1, %(count)s)) AS ids

-- name: copy_jobs
COPY passito_jobs.jobs (id, queue, type, payload, priority, max_attempts, run_at, concurrency_key)
FROM STDIN (FORMAT BINARY)

-- name: copy_labelled_jobs
COPY passito_jobs.jobs (id, queue, type, payload, priority, max_attempts, run_at, concurrency_key, tags,
                        metadata)
FROM STDIN (FORMAT BINARY)

-- name: notify_ready
SELECT passito_jobs.notify_ready(%(queues)s::text[])

-- name: claim
-- The payload comes as text: the worker decodes each on its own, so one it cannot read (nested
-- deeper than Python's parser goes) fails that job, not the claim. claim_or_wait (migration 0014)
-- also returns the jobs handed to this worker that it does not know yet (`handed`), and leaves
-- its free slots in waiting_workers when `channel` is given and the claim came back short.
SELECT id, queue, type, payload::text AS payload, priority, attempts, max_attempts, waited_seconds,
       metadata::text AS metadata, parents::text AS parents, handed
FROM passito_jobs.claim_or_wait(%(worker_id)s, %(queues)s::text[], %(batch)s, %(channel)s,
                                %(lock_key)s, %(known)b::bigint[])

-- name: claim_alone
-- `claim` on its own (an idle worker woken by a notification, or polling). On a server without
-- synchronous standbys its commit does not wait for the WAL flush (synchronous_commit off for
-- this transaction; the one-time filter runs once, before the claim): the flush, about 0.5 ms
-- here, is a third of a pickup. A claim is a lease: if the server crashes before the flush, the
-- job is pending again and runs again, and the worker that held it stops it at its next
-- heartbeat, as after any lost lease. With synchronous standbys named the session's setting
-- stands, so a claim that returned is on a standby and survives a failover
-- (docs/operations.md). Outcomes are never sent with it: `claim` rides in their transaction,
-- so completions and failures stay durable.
SELECT id, queue, type, payload::text AS payload, priority, attempts, max_attempts, waited_seconds,
       metadata::text AS metadata, parents::text AS parents, handed
FROM passito_jobs.claim_or_wait(%(worker_id)s, %(queues)s::text[], %(batch)s, %(channel)s,
                                %(lock_key)s, %(known)b::bigint[])
WHERE (SELECT CASE WHEN current_setting('synchronous_standby_names') = ''
                   THEN set_config('synchronous_commit', 'off', true) ELSE '' END) IS NOT NULL

-- name: stop_waiting
-- The worker stops taking handed jobs (shutdown): the handed jobs it does not know go back to
-- pending. A dispatch handing it one right now is waited for, at most 5 s.
SELECT passito_jobs.stop_waiting(%(worker_id)s, %(known)b::bigint[])
WHERE set_config('lock_timeout', '5s', true) IS NOT NULL

-- name: complete
-- The id and attempt lists go in binary (%b): 4x cheaper for psycopg to encode than text, the
-- worker's busiest encoding (two lists of up to PASSITO_BATCH_SIZE numbers per round trip).
SELECT passito_jobs.complete(%(worker_id)s, %(ids)b::bigint[], %(attempts)b::integer[], %(results)s::text[]::jsonb[])

-- name: fail
SELECT passito_jobs.fail(%(worker_id)s, %(ids)s::bigint[], %(attempts)s::integer[], %(errors)s::text[],
                         %(retry_in)s::double precision[])

-- name: release
SELECT passito_jobs.release(%(worker_id)s, %(ids)s::bigint[], %(attempts)s::integer[])

-- name: heartbeat
SELECT passito_jobs.heartbeat(%(worker_id)s, %(ids)s::bigint[], %(attempts)s::integer[],
                              %(progress)s::text[]::jsonb[])

-- name: rescue
SELECT id, state::text AS state, worker_id
FROM passito_jobs.rescue(make_interval(secs => %(stuck_after)s), %(batch)s)

-- name: prune
-- Also drops the waiting_workers rows of workers gone (migration 0014); the first column is the
-- rows pruned.
SELECT passito_jobs.prune(make_interval(secs => %(keep_completed)s), make_interval(secs => %(keep_failed)s),
                          %(batch)s) AS pruned,
       passito_jobs.forget_waiting_workers() AS forgotten

-- name: acquire_lease
SELECT coalesce(passito_jobs.acquire_lease(%(lease)s, %(worker_id)s, make_interval(secs => %(ttl)s)), false)

-- name: release_lease
DELETE FROM passito_jobs.leases WHERE name = %(lease)s AND worker_id = %(worker_id)s

-- name: cancel
SELECT passito_jobs.cancel(%(ids)s::bigint[])

-- name: retry
SELECT passito_jobs.retry(%(ids)s::bigint[])

-- name: cancel_unfinished_tagged
-- Cancels the blocked, pending and processing jobs that carry a tag (found through
-- jobs_tags_idx); returns their ids.
SELECT passito_jobs.cancel(ARRAY(
    SELECT id FROM passito_jobs.jobs
    WHERE tags @> ARRAY[%(tag)s::text] AND state IN ('blocked', 'pending', 'processing')
))

-- name: failed_ids
SELECT id FROM passito_jobs.jobs
WHERE state = 'failed' AND (%(type)s::text IS NULL OR type = %(type)s)
ORDER BY id

-- name: dead_parents
-- The first failed or cancelled parent of each of the given jobs that has one and waits for its
-- parents to complete (a finished-mode child runs whatever they did: retry requeues it).
SELECT c.id AS id, p.id AS parent_id, p.state::text AS parent_state
FROM passito_jobs.jobs c
CROSS JOIN LATERAL (
    SELECT p.id, p.state FROM passito_jobs.jobs p
    WHERE p.id = ANY(c.depends_on) AND p.state IN ('failed', 'cancelled')
    ORDER BY p.id
    LIMIT 1
) p
WHERE c.id = ANY(%(ids)s::bigint[]) AND c.depends_on_mode IS DISTINCT FROM 'finished'

-- name: blocked_orphans
SELECT queue, count(*) AS jobs FROM passito_jobs.blocked_orphans() GROUP BY queue ORDER BY queue

-- name: existing_ids
SELECT id FROM passito_jobs.jobs WHERE id = ANY(%(ids)s::bigint[])

-- name: get_job
SELECT * FROM passito_jobs.jobs WHERE id = %(id)s

-- name: job_flow
-- A job's first `limit` parents, and its descendants (children, their children, ...) nearest
-- first: `limit` of them with their states and the parent each was reached from, and how many there are in all,
-- counted among the first `cap` dependency edges walked (`capped`: the walk stopped there).
WITH RECURSIVE descendants(id, parent_id, depth) AS (
    SELECT d.child_id, d.parent_id, 1 FROM passito_jobs.job_dependencies d WHERE d.parent_id = %(id)s
    UNION
    SELECT d.child_id, d.parent_id, x.depth + 1
    FROM descendants x
    JOIN passito_jobs.job_dependencies d ON d.parent_id = x.id
    WHERE x.depth < 1000
),
reached AS (
    SELECT * FROM descendants LIMIT %(cap)s
),
nearest AS (
    SELECT DISTINCT ON (r.id) r.id, r.parent_id, r.depth FROM reached r ORDER BY r.id, r.depth, r.parent_id
),
counted AS (
    SELECT n.*, count(*) OVER () AS total FROM nearest n
)
(SELECT 'parent' AS relation, p.id, p.type, p.state::text AS state, NULL::bigint AS parent_id, 0 AS depth,
        0::bigint AS total, false AS capped
 FROM passito_jobs.jobs p
 WHERE p.id = ANY(%(parents)s::bigint[])
 ORDER BY p.id
 LIMIT %(limit)s)
UNION ALL
(SELECT 'descendant', j.id, j.type, j.state::text, c.parent_id, c.depth, c.total,
        (SELECT count(*) FROM reached) >= %(cap)s
 FROM counted c
 JOIN passito_jobs.jobs j ON j.id = c.id
 ORDER BY c.depth, c.id
 LIMIT %(limit)s)

-- name: list_jobs
SELECT * FROM passito_jobs.jobs
WHERE (%(state)s::passito_jobs.job_state IS NULL OR state = %(state)s::passito_jobs.job_state)
  AND (%(type)s::text IS NULL OR type = %(type)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  -- A common tag (Store.list_jobs): the newest jobs carry it, so the walk back along the primary
  -- key finds `limit` of them soon.
  AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
ORDER BY id DESC
LIMIT %(limit)s

-- name: tag_matches
-- How many jobs carry a tag, counted up to `cap`: a rare tag is read through its index
-- (list_tagged_jobs), a common one by list_jobs. The planner cannot tell them apart itself: it
-- estimates every tag outside its sample of common ones at 0.5% of the table, and walks the
-- primary key for the rare ones too (5 s for the 3 jobs of an outpass among 3 million).
SELECT count(*) AS matches
FROM (SELECT 1 FROM passito_jobs.jobs WHERE tags @> ARRAY[%(tag)s::text] LIMIT %(cap)s) m

-- name: list_tagged_jobs
-- The jobs of a rare tag (fewer than tag_matches's cap), newest first: the tag's jobs first,
-- through jobs_tags_idx (a GIN index over tagged jobs only), then the other filters and the order.
WITH tagged AS MATERIALIZED (
    SELECT * FROM passito_jobs.jobs WHERE tags @> ARRAY[%(tag)s::text]
)
SELECT * FROM tagged
WHERE (%(state)s::passito_jobs.job_state IS NULL OR state = %(state)s::passito_jobs.job_state)
  AND (%(type)s::text IS NULL OR type = %(type)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
ORDER BY id DESC
LIMIT %(limit)s

-- name: load
-- Jobs ready now and jobs in flight, in the given queues (NULL: all): what the autoscalers scale
-- on. The chart's KEDA ScaledObject calls the same function.
SELECT ready, processing FROM passito_jobs.load(%(queues)s::text[])

-- name: next_run_at
-- When the next delayed job is due, or a rate-limited queue with ready jobs may start its next
-- one (next_paced_at), whichever comes first. Seconds since the epoch: a run_at of 'infinity'
-- (or past year 9999) is a number here, not a timestamp the driver cannot represent.
SELECT extract(epoch FROM least(
    (SELECT min(run_at) FROM passito_jobs.jobs
     WHERE state = 'pending' AND run_at > now()
       AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))),
    (SELECT min(q.rate_next_at) FROM passito_jobs.queues q
     WHERE q.rate_limit IS NOT NULL AND NOT q.paused AND q.rate_next_at > now()
       AND (%(queues)s::text[] IS NULL OR q.name = ANY(%(queues)s::text[]))
       AND EXISTS (SELECT 1 FROM passito_jobs.jobs j
                   WHERE j.state = 'pending' AND j.queue = q.name AND j.run_at <= now()))
))::double precision AS next_run_at

-- name: next_paced_at
-- When the next rate-limited queue with ready jobs may start one (passito_jobs.queues.rate_next_at):
-- asked after a partial batch, so it reads only the small queues table and one index probe per
-- rate-limited queue.
SELECT extract(epoch FROM min(q.rate_next_at))::double precision AS next_paced_at
FROM passito_jobs.queues q
WHERE q.rate_limit IS NOT NULL AND NOT q.paused AND q.rate_next_at > now()
  AND (%(queues)s::text[] IS NULL OR q.name = ANY(%(queues)s::text[]))
  AND EXISTS (SELECT 1 FROM passito_jobs.jobs j
              WHERE j.state = 'pending' AND j.queue = q.name AND j.run_at <= now())

-- name: finished_among
SELECT count(*) FILTER (WHERE state IN ('completed', 'failed', 'cancelled')) AS finished,
       count(*) FILTER (WHERE state = 'failed') AS failed
FROM passito_jobs.jobs WHERE id = ANY(%(ids)s)

-- name: unfinished_jobs
SELECT count(*) AS unfinished FROM passito_jobs.jobs WHERE state IN ('blocked', 'pending', 'processing')

-- name: set_statement_timeout
-- Bounds the statements of the current transaction (SET LOCAL takes no parameters).
SELECT set_config('statement_timeout', %(timeout_ms)s::text, true)

-- name: queue_stats
-- Per-queue numbers for health checks and the exporter, in one statement. Each part reads one
-- partial index, so the millions of completed rows the table may hold are never counted:
-- pending (jobs_ready_by_queue_idx) and blocked (jobs_blocked_idx) jobs index-only; processing
-- jobs (jobs_processing_idx) are few; failed jobs and jobs finished within the window are
-- range scans of jobs_finished_idx. Completed and cancelled jobs are counted only within
-- the window.
WITH pending AS (
    SELECT queue,
           count(*) AS pending,
           count(*) FILTER (WHERE run_at <= now()) AS ready,
           count(*) FILTER (WHERE run_at <= now() - make_interval(secs => %(stale_after)s)) AS stale,
           -- Measured from 1970 at the earliest: a run_at of '-infinity' (written by hand) has no finite age.
           extract(epoch FROM now() - min(greatest(run_at, '1970-01-01 00:00:00+00'))
                                      FILTER (WHERE run_at <= now())) AS oldest_ready_age
    FROM passito_jobs.jobs
    WHERE state = 'pending'
    GROUP BY queue
),
blocked AS (
    SELECT queue, count(*) AS blocked
    FROM passito_jobs.jobs
    WHERE state = 'blocked'
    GROUP BY queue
),
processing AS (
    SELECT queue,
           count(*) AS processing,
           count(*) FILTER (WHERE heartbeat_at < now() - make_interval(secs => %(stuck_after)s)) AS stuck
    FROM passito_jobs.jobs
    WHERE state = 'processing'
    GROUP BY queue
),
failed AS (
    SELECT queue,
           count(*) AS failed,
           count(*) FILTER (WHERE finished_at >= now() - make_interval(secs => %(window)s)) AS failed_recently
    FROM passito_jobs.jobs
    WHERE state = 'failed'
    GROUP BY queue
),
completed AS (
    SELECT queue, count(*) AS completed_recently
    FROM passito_jobs.jobs
    WHERE state = 'completed' AND finished_at >= now() - make_interval(secs => %(window)s)
    GROUP BY queue
),
-- Flow control (docs/flow-control.md): the queues paused or limited, their limits, and the
-- ready jobs they hold back. A paused queue's waiting jobs are waiting on purpose: not stale.
flow AS (
    SELECT queue, paused, held_back, concurrency, key_concurrency,
           (rate_limit / extract(epoch FROM rate_period))::double precision AS rate_per_second
    FROM passito_jobs.queue_flow()
    WHERE paused OR held_back > 0 OR concurrency IS NOT NULL OR rate_limit IS NOT NULL
       OR key_concurrency IS NOT NULL
)
SELECT queue,
       coalesce(b.blocked, 0) AS blocked,
       coalesce(p.pending, 0) AS pending,
       coalesce(p.ready, 0) AS ready,
       CASE WHEN l.paused THEN 0 ELSE coalesce(p.stale, 0) END AS stale,
       coalesce(p.oldest_ready_age, 0)::double precision AS oldest_ready_age,
       coalesce(r.processing, 0) AS processing,
       coalesce(r.stuck, 0) AS stuck,
       coalesce(f.failed, 0) AS failed,
       coalesce(c.completed_recently, 0) AS completed_recently,
       coalesce(f.failed_recently, 0) AS failed_recently,
       coalesce(l.paused, false) AS paused,
       coalesce(l.held_back, 0) AS held_back,
       l.concurrency,
       l.rate_per_second,
       l.key_concurrency
FROM pending p
FULL JOIN blocked b USING (queue)
FULL JOIN processing r USING (queue)
FULL JOIN failed f USING (queue)
FULL JOIN completed c USING (queue)
FULL JOIN flow l USING (queue)
ORDER BY queue

-- name: queue_flow
-- Each queue's flow control: its settings, ready and processing jobs, and those held back.
SELECT queue, paused, concurrency, rate_limit, extract(epoch FROM rate_period)::double precision AS rate_period,
       key_concurrency, ready, processing, held_back
FROM passito_jobs.queue_flow(%(queues)s::text[])

-- name: pause_queue
SELECT passito_jobs.pause_queue(%(queue)s)

-- name: resume_queue
SELECT passito_jobs.resume_queue(%(queue)s)

-- name: set_queue_concurrency
SELECT passito_jobs.set_queue_concurrency(%(queue)s, %(value)s)

-- name: set_queue_key_concurrency
SELECT passito_jobs.set_queue_key_concurrency(%(queue)s, %(value)s)

-- name: set_queue_rate
SELECT passito_jobs.set_queue_rate(%(queue)s, %(rate_limit)s,
                                   make_interval(secs => %(rate_period)s::double precision))

-- name: listen
-- The channel every dispatch notifies (pg_notify('passito_jobs', queue)).
LISTEN passito_jobs

-- name: listen_handoff
-- The session advisory lock that tells a dispatch this worker listens on its own channel for
-- handed jobs (migration 0014); false when another session holds it (the worker then takes no
-- handed jobs). The worker LISTENs on its channel, made of [a-z0-9_], after this.
SELECT pg_try_advisory_lock(1885434740, %(lock_key)s)

-- name: listen_cancel
-- The channel a processing job's cancellation notifies (its id; migration 0009).
LISTEN passito_jobs_cancel

-- name: cancelled_among
-- Which of the given jobs are cancelled (a heartbeat asks about the jobs it no longer holds).
SELECT coalesce(array_agg(j.id), '{}') FROM passito_jobs.jobs j
WHERE j.id = ANY(%(ids)s::bigint[]) AND j.state = 'cancelled'

-- name: sync_schedule
-- A schedule as the lease holder's code defines it; a row is rewritten only when it changed.
INSERT INTO passito_jobs.schedules AS s (name, type, queue, payload, cron, every, timezone, catch_up)
VALUES (%(name)s, %(type)s, %(queue)s, %(payload)s::jsonb, %(cron)s, %(every)s, %(timezone)s, %(catch_up)s)
ON CONFLICT (name) DO UPDATE
SET type = excluded.type, queue = excluded.queue, payload = excluded.payload, cron = excluded.cron,
    every = excluded.every, timezone = excluded.timezone, catch_up = excluded.catch_up,
    stale = false, updated_at = now()
WHERE (s.type, s.queue, s.payload, s.cron, s.every, s.timezone, s.catch_up, s.stale)
      IS DISTINCT FROM (excluded.type, excluded.queue, excluded.payload, excluded.cron, excluded.every,
                        excluded.timezone, excluded.catch_up, false)

-- name: mark_stale_schedules
-- Schedules the lease holder's code no longer defines: listed as stale, never dispatched.
UPDATE passito_jobs.schedules SET stale = true, next_slot = NULL, updated_at = now()
WHERE NOT stale AND NOT (name = ANY(%(names)s::text[]))

-- name: schedule_states
SELECT name, paused, last_slot, checked_at, created_at, now() AS now
FROM passito_jobs.schedules WHERE name = ANY(%(names)s::text[])

-- name: lock_schedule
SELECT name, paused, last_slot, checked_at, created_at, now() AS now
FROM passito_jobs.schedules WHERE name = %(name)s FOR UPDATE

-- name: mark_schedule
-- The latest slot dealt with, in the transaction that dispatched its job(s).
UPDATE passito_jobs.schedules
SET last_slot = %(last_slot)s, last_job_id = coalesce(%(last_job_id)s, last_job_id),
    next_slot = %(next_slot)s, checked_at = now()
WHERE name = %(name)s

-- name: touch_schedules
UPDATE passito_jobs.schedules s SET checked_at = now(), next_slot = n.next_slot
FROM unnest(%(names)s::text[], %(next_slots)s::timestamptz[]) AS n(name, next_slot)
WHERE s.name = n.name AND NOT s.paused

-- name: list_schedules
-- Workers write `every` from their checked definitions; one edited by hand to NaN or infinity
-- (which a check such as `every > 0` would let through) reads as NULL, so the list stays JSON.
SELECT name, type, queue, cron,
       CASE WHEN every IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE every END AS every,
       timezone, catch_up, paused, stale, last_slot, last_job_id, next_slot, checked_at
FROM passito_jobs.schedules ORDER BY name

-- name: pause_schedule
UPDATE passito_jobs.schedules SET paused = %(paused)s, updated_at = now() WHERE name = %(name)s
RETURNING name

-- name: snooze
SELECT passito_jobs.snooze(%(worker_id)s, %(ids)s::bigint[], %(attempts)s::integer[],
                           %(delays)s::double precision[], %(max_snoozes)s::integer[])

-- name: await_job
-- Mark a job awaited (its end is announced on passito_jobs_finished) and read its state.
UPDATE passito_jobs.jobs SET awaited = true WHERE id = %(id)s
RETURNING state::text AS state, result, last_error

-- name: job_result
SELECT state::text AS state, result, last_error FROM passito_jobs.job_result(%(id)s)

-- name: listen_finished
LISTEN passito_jobs_finished

-- name: register_job_types
SELECT passito_jobs.register_job_types(%(worker_id)s, %(types)s::text[], %(queues)s::text[])

-- name: known_job_types
-- Every job type a worker ever ran.
SELECT type FROM passito_jobs.job_types ORDER BY type

-- name: unserved_ready_jobs
-- Ready jobs whose type no live worker runs on their queue (no worker registered the type,
-- for that queue or for every queue, within `live_within` seconds), by type and queue.
SELECT j.type, j.queue, count(*) AS jobs
FROM passito_jobs.jobs j
WHERE j.state = 'pending' AND j.run_at <= now()
  AND NOT EXISTS (
      SELECT 1 FROM passito_jobs.worker_job_types w
      WHERE w.type = j.type AND w.last_seen >= now() - make_interval(secs => %(live_within)s)
        AND (w.queues IS NULL OR j.queue = ANY(w.queues)))
GROUP BY j.type, j.queue
ORDER BY j.type, j.queue
