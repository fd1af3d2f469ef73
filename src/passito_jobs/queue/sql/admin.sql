-- Named queries of the dashboard and admin API (`passito-jobs web`), run only by
-- passito_jobs.queue.admin. Every query is bounded: it walks an index for at most a page, a
-- window of ids or a fixed number of rows, so none reads the whole jobs table. Actions go through
-- passito_jobs.retry and passito_jobs.cancel and write the audit log in the same statement.

-- name: set_session_timeout
-- Bounds every later statement of this connection (the dashboard's connections only).
SELECT set_config('statement_timeout', %(timeout_ms)s::text, false)

-- name: job_id_range
-- The lowest and highest job ids: two probes of the primary key.
SELECT (SELECT min(id) FROM passito_jobs.jobs), (SELECT max(id) FROM passito_jobs.jobs)

-- name: jobs_in_state
-- A page of failed or cancelled jobs, newest first, from jobs_state_id_idx (the repeated state
-- list lets the planner use the partial index for a state parameter). `floor` bounds the walk
-- when other filters may skip many of them.
SELECT id, queue, type, state::text AS state, priority, attempts, max_attempts, run_at, created_at,
       started_at, finished_at, worker_id, left(last_error, 400) AS error_head
FROM passito_jobs.jobs
WHERE state = %(state)s::passito_jobs.job_state AND state IN ('failed', 'cancelled')
  AND id < %(before)s AND id >= %(floor)s
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
  AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
ORDER BY id DESC
LIMIT %(limit)s

-- name: jobs_in_id_window
-- A page of jobs with ids in [floor, before), newest first, by the primary key; the other
-- filters are checked on the rows of the window.
SELECT id, queue, type, state::text AS state, priority, attempts, max_attempts, run_at, created_at,
       started_at, finished_at, worker_id, left(last_error, 400) AS error_head
FROM passito_jobs.jobs
WHERE id < %(before)s AND id >= %(floor)s
  AND (%(state)s::passito_jobs.job_state IS NULL OR state = %(state)s::passito_jobs.job_state)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
  AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
ORDER BY id DESC
LIMIT %(limit)s

-- name: jobs_in_created_range
-- A page of the jobs created in [created_from, created_to) with ids in [floor, before): the
-- BRIN index on created_at skips the page ranges outside the time range.
SELECT id, queue, type, state::text AS state, priority, attempts, max_attempts, run_at, created_at,
       started_at, finished_at, worker_id, left(last_error, 400) AS error_head
FROM passito_jobs.jobs
WHERE created_at >= %(created_from)s::timestamptz AND created_at < %(created_to)s::timestamptz
  AND id < %(before)s AND id >= %(floor)s
  AND (%(state)s::passito_jobs.job_state IS NULL OR state = %(state)s::passito_jobs.job_state)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
ORDER BY id DESC
LIMIT %(limit)s

-- name: jobs_with_tag
-- A page of the jobs of a rare tag (fewer than RARE_TAG_JOBS, counted by tag_matches), newest
-- first: the tag's jobs below `before` through jobs_tags_idx, then the other filters and the
-- order (materialized, or the planner walks the primary key looking for them).
WITH tagged AS MATERIALIZED (
    SELECT id, queue, type, state, priority, attempts, max_attempts, run_at, created_at,
           started_at, finished_at, worker_id, last_error
    FROM passito_jobs.jobs
    WHERE tags @> ARRAY[%(tag)s::text] AND id < %(before)s AND id >= %(floor)s
)
SELECT id, queue, type, state::text AS state, priority, attempts, max_attempts, run_at, created_at,
       started_at, finished_at, worker_id, left(last_error, 400) AS error_head
FROM tagged
WHERE (%(state)s::passito_jobs.job_state IS NULL OR state = %(state)s::passito_jobs.job_state)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
  AND (%(type)s::text IS NULL OR type = %(type)s::text)
  AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
  AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
ORDER BY id DESC
LIMIT %(limit)s

-- name: action_candidates
-- The ids of a bulk action: jobs in the given states that match the filter, oldest first (a
-- parent before its children), at most `max`. One branch per state, each with its state written
-- out, so each reads its state's partial index (jobs_state_id_idx, jobs_ready_idx,
-- jobs_processing_idx, jobs_blocked_idx); a branch for a state not asked for is skipped.
SELECT id FROM (
    (SELECT id FROM passito_jobs.jobs
     WHERE state = 'failed' AND 'failed' = ANY(%(states)s::text[]) AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
       AND (%(type)s::text IS NULL OR type = %(type)s::text) AND (%(id)s::bigint IS NULL OR id = %(id)s::bigint)
       AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
       AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
       AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
     ORDER BY id LIMIT %(max)s)
    UNION ALL
    (SELECT id FROM passito_jobs.jobs
     WHERE state = 'cancelled' AND 'cancelled' = ANY(%(states)s::text[]) AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
       AND (%(type)s::text IS NULL OR type = %(type)s::text) AND (%(id)s::bigint IS NULL OR id = %(id)s::bigint)
       AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
       AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
       AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
     ORDER BY id LIMIT %(max)s)
    UNION ALL
    (SELECT id FROM passito_jobs.jobs
     WHERE state = 'pending' AND 'pending' = ANY(%(states)s::text[]) AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
       AND (%(type)s::text IS NULL OR type = %(type)s::text) AND (%(id)s::bigint IS NULL OR id = %(id)s::bigint)
       AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
       AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
       AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
     ORDER BY id LIMIT %(max)s)
    UNION ALL
    (SELECT id FROM passito_jobs.jobs
     WHERE state = 'processing' AND 'processing' = ANY(%(states)s::text[]) AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
       AND (%(type)s::text IS NULL OR type = %(type)s::text) AND (%(id)s::bigint IS NULL OR id = %(id)s::bigint)
       AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
       AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
       AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
     ORDER BY id LIMIT %(max)s)
    UNION ALL
    (SELECT id FROM passito_jobs.jobs
     WHERE state = 'blocked' AND 'blocked' = ANY(%(states)s::text[]) AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
       AND (%(type)s::text IS NULL OR type = %(type)s::text) AND (%(id)s::bigint IS NULL OR id = %(id)s::bigint)
       AND (%(tag)s::text IS NULL OR tags @> ARRAY[%(tag)s::text])
       AND (%(created_from)s::timestamptz IS NULL OR created_at >= %(created_from)s::timestamptz)
       AND (%(created_to)s::timestamptz IS NULL OR created_at < %(created_to)s::timestamptz)
     ORDER BY id LIMIT %(max)s)
) candidates
ORDER BY id
LIMIT %(max)s

-- name: relatives
-- A job's parents and (at most `limit`) children with their states.
(SELECT 'parent' AS relation, p.id, p.type, p.queue, p.state::text AS state
 FROM passito_jobs.jobs p
 WHERE p.id = ANY(%(parents)s::bigint[])
 ORDER BY p.id)
UNION ALL
(SELECT 'child', c.id, c.type, c.queue, c.state::text
 FROM passito_jobs.job_dependencies d
 JOIN passito_jobs.jobs c ON c.id = d.child_id
 WHERE d.parent_id = %(id)s
 ORDER BY c.id
 LIMIT %(limit)s)

-- name: flow
-- The jobs connected to one by dependencies (parents, children, their parents, ...), nearest
-- first, at most `limit`: the graph of an outpass flow (QR code -> PDF -> email), or any other.
WITH RECURSIVE flow(id) AS (
    SELECT %(id)s::bigint
    UNION
    SELECT CASE WHEN d.child_id = f.id THEN d.parent_id ELSE d.child_id END
    FROM flow f
    JOIN passito_jobs.job_dependencies d ON d.child_id = f.id OR d.parent_id = f.id
),
nearest AS (
    SELECT id FROM flow LIMIT %(limit)s
)
SELECT j.id, j.type, j.queue, j.state::text AS state, j.depends_on, j.attempts, j.max_attempts
FROM nearest n
JOIN passito_jobs.jobs j ON j.id = n.id
ORDER BY j.id

-- name: workers
-- Workers seen by their heartbeats (those holding processing jobs, through jobs_processing_idx,
-- with the jobs each holds) and workers waiting for jobs (waiting_workers, migration 0014: a
-- worker whose listener holds its lock, with its free slots). The one query to change when
-- workers get a table of their own.
WITH holding AS (
    SELECT worker_id,
           count(*) AS jobs,
           (array_agg(id ORDER BY id))[1:%(ids)s] AS job_ids,
           array_agg(DISTINCT queue ORDER BY queue) AS queues,
           array_agg(DISTINCT type ORDER BY type) AS types,
           min(claimed_at) AS oldest_claim,
           max(heartbeat_at) AS last_heartbeat
    FROM passito_jobs.jobs
    WHERE state = 'processing'
    GROUP BY worker_id
),
waiting AS (
    SELECT w.worker_id, w.slots, w.queues
    FROM passito_jobs.waiting_workers w
    WHERE EXISTS (SELECT 1 FROM pg_locks l
                  WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 1885434740
                    AND l.objid = w.lock_key::oid AND l.objsubid = 2
                    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
)
SELECT coalesce(h.worker_id, w.worker_id) AS worker_id,
       coalesce(h.jobs, 0) AS jobs,
       coalesce(h.job_ids, '{}') AS job_ids,
       coalesce(h.queues, w.queues, '{}') AS queues,
       coalesce(h.types, '{}') AS types,
       h.oldest_claim,
       h.last_heartbeat,
       extract(epoch FROM now() - h.last_heartbeat)::double precision AS heartbeat_age,
       w.slots AS free_slots
FROM holding h
FULL JOIN waiting w ON w.worker_id = h.worker_id
ORDER BY 1
LIMIT %(limit)s

-- name: throughput
-- Jobs completed and failed per time bucket over the last `span` seconds: a range scan of
-- jobs_finished_idx, index-only on a vacuumed table.
SELECT date_bin(make_interval(secs => %(bucket)s), finished_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       count(*) FILTER (WHERE state = 'completed') AS completed,
       count(*) FILTER (WHERE state = 'failed') AS failed
FROM passito_jobs.jobs
WHERE state IN ('completed', 'failed') AND finished_at >= now() - make_interval(secs => %(span)s)
GROUP BY 1
ORDER BY 1

-- name: retry_logged
-- passito_jobs.retry on the given jobs, and its audit row, in one statement.
WITH done AS (
    SELECT passito_jobs.retry(%(ids)s::bigint[]) AS ids
),
logged AS (
    INSERT INTO passito_jobs.audit_log (actor, role, action, source, job_ids, changed_ids, filter)
    SELECT %(actor)s, %(role)s, 'retry', %(source)s, %(ids)s::bigint[], d.ids, %(filter)s::jsonb FROM done d
    RETURNING id
)
SELECT d.ids, l.id FROM done d, logged l

-- name: cancel_logged
-- passito_jobs.cancel on the given jobs, and its audit row, in one statement.
WITH done AS (
    SELECT passito_jobs.cancel(%(ids)s::bigint[]) AS ids
),
logged AS (
    INSERT INTO passito_jobs.audit_log (actor, role, action, source, job_ids, changed_ids, filter)
    SELECT %(actor)s, %(role)s, 'cancel', %(source)s, %(ids)s::bigint[], d.ids, %(filter)s::jsonb FROM done d
    RETURNING id
)
SELECT d.ids, l.id FROM done d, logged l

-- name: pause_logged
-- passito_jobs.pause_queue (true when it created the queue's row), and its audit row, in one
-- statement.
WITH done AS (
    SELECT passito_jobs.pause_queue(%(queue)s::text) AS created
),
logged AS (
    INSERT INTO passito_jobs.audit_log (actor, role, action, source, job_ids, changed_ids, filter)
    SELECT %(actor)s, %(role)s, 'pause', %(source)s, '{}', '{}', jsonb_build_object('queue', %(queue)s::text)
    FROM done d
    RETURNING id
)
SELECT d.created, l.id FROM done d, logged l

-- name: resume_logged
-- passito_jobs.resume_queue (which wakes the queue's workers), and its audit row, in one statement.
WITH done AS (
    SELECT passito_jobs.resume_queue(%(queue)s::text) AS created
),
logged AS (
    INSERT INTO passito_jobs.audit_log (actor, role, action, source, job_ids, changed_ids, filter)
    SELECT %(actor)s, %(role)s, 'resume', %(source)s, '{}', '{}', jsonb_build_object('queue', %(queue)s::text)
    FROM done d
    RETURNING id
)
SELECT d.created, l.id FROM done d, logged l

-- name: schedule_paused_logged
-- Pause or resume a schedule (queries.sql pause_schedule, as `schedules pause` does), and its
-- audit row (action pause or resume, filter {"schedule": name}), in one statement. No row: no
-- schedule has that name, and nothing is written.
WITH done AS (
    UPDATE passito_jobs.schedules SET paused = %(paused)s, updated_at = now()
    WHERE name = %(name)s
    RETURNING name
),
logged AS (
    INSERT INTO passito_jobs.audit_log (actor, role, action, source, job_ids, changed_ids, filter)
    SELECT %(actor)s, %(role)s, %(action)s, %(source)s, '{}', '{}', jsonb_build_object('schedule', d.name)
    FROM done d
    RETURNING id
)
SELECT l.id FROM logged l

-- name: job_states
-- The states of the given jobs (why an action left some unchanged).
SELECT id, state::text FROM passito_jobs.jobs WHERE id = ANY(%(ids)s::bigint[])

-- name: audit_page
-- A page of the audit log, newest first.
SELECT id, at, actor, role, action, source, job_ids[1:%(ids)s] AS job_ids, cardinality(job_ids) AS asked,
       changed_ids[1:%(ids)s] AS changed_ids, cardinality(changed_ids) AS changed, filter,
       NULL::boolean AS job_changed
FROM passito_jobs.audit_log
WHERE id < %(before)s
ORDER BY id DESC
LIMIT %(limit)s

-- name: audit_of_job
-- The actions that named one job, newest first (audit_log_job_ids_idx).
SELECT id, at, actor, role, action, source, job_ids[1:%(ids)s] AS job_ids, cardinality(job_ids) AS asked,
       changed_ids[1:%(ids)s] AS changed_ids, cardinality(changed_ids) AS changed, filter,
       %(job)s::bigint = ANY(changed_ids) AS job_changed
FROM passito_jobs.audit_log
WHERE job_ids @> ARRAY[%(job)s::bigint]
ORDER BY id DESC
LIMIT %(limit)s

-- name: limits_logged
-- The audit row of a change of a queue's limits, in the transaction that made it
-- (FlowControl.set_limits); `filter` names the queue and the limits given (null: none).
INSERT INTO passito_jobs.audit_log (actor, role, action, source, job_ids, changed_ids, filter)
VALUES (%(actor)s, %(role)s, 'limit', %(source)s, '{}', '{}',
        jsonb_build_object('queue', %(queue)s::text) || %(limits)s::jsonb)
RETURNING id
