-- Named queries of the queue library, run only by passito_jobs.queue.store.
-- Each starts with a `-- name: <name>` line. State transitions are SQL functions
-- (migrations/), so the same rules serve Python, the CLI and other languages.

-- name: dispatch
SELECT passito_jobs.dispatch(
    job_type => %(type)s, payload => %(payload)s, queue => %(queue)s, priority => %(priority)s,
    run_at => coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => coalesce(%(delay)s, 0))),
    depends_on => %(depends_on)s::bigint[], max_attempts => %(max_attempts)s,
    unique_key => %(unique_key)s)

-- name: reserve_ids
-- The server's clock and `count` fresh job ids, for a COPY of many jobs.
SELECT now(), ARRAY(SELECT nextval(pg_get_serial_sequence('passito_jobs.jobs', 'id'))
                    FROM generate_series(1, %(count)s))

-- name: copy_jobs
COPY passito_jobs.jobs (id, queue, type, payload, priority, max_attempts, run_at) FROM STDIN (FORMAT BINARY)

-- name: notify_ready
SELECT passito_jobs.notify_ready(%(queues)s::text[])

-- name: claim
SELECT * FROM passito_jobs.claim(%(worker)s, %(queues)s::text[], %(batch)s)

-- name: complete
SELECT passito_jobs.complete(%(worker)s, %(ids)s::bigint[], %(attempts)s::integer[], %(results)s::text[]::jsonb[])

-- name: fail
SELECT passito_jobs.fail(%(worker)s, %(ids)s::bigint[], %(attempts)s::integer[], %(errors)s::text[],
                         %(retry_in)s::double precision[])

-- name: release
SELECT passito_jobs.release(%(worker)s, %(ids)s::bigint[], %(attempts)s::integer[])

-- name: heartbeat
SELECT passito_jobs.heartbeat(%(worker)s, %(ids)s::bigint[], %(attempts)s::integer[], %(progress)s::jsonb[])

-- name: rescue
SELECT id, state::text, worker_id FROM passito_jobs.rescue(make_interval(secs => %(stuck_after)s), %(batch)s)

-- name: prune
SELECT passito_jobs.prune(make_interval(secs => %(keep_completed)s), make_interval(secs => %(keep_failed)s),
                          %(batch)s)

-- name: acquire_lease
SELECT coalesce(passito_jobs.acquire_lease(%(lease)s, %(holder)s, make_interval(secs => %(ttl)s)), false)

-- name: release_lease
DELETE FROM passito_jobs.leases WHERE name = %(lease)s AND holder = %(holder)s

-- name: cancel
SELECT passito_jobs.cancel(%(ids)s::bigint[])

-- name: retry
SELECT passito_jobs.retry(%(ids)s::bigint[])

-- name: failed_ids
SELECT id FROM passito_jobs.jobs
WHERE state = 'failed' AND (%(type)s::text IS NULL OR type = %(type)s)
ORDER BY id

-- name: existing_ids
SELECT id FROM passito_jobs.jobs WHERE id = ANY(%(ids)s::bigint[])

-- name: get_job
SELECT * FROM passito_jobs.jobs WHERE id = %(id)s

-- name: list_jobs
SELECT * FROM passito_jobs.jobs
WHERE (%(state)s::passito_jobs.job_state IS NULL OR state = %(state)s::passito_jobs.job_state)
  AND (%(type)s::text IS NULL OR type = %(type)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
ORDER BY id DESC
LIMIT %(limit)s

-- name: count_by_queue_and_state
SELECT queue, state::text, count(*) FROM passito_jobs.jobs GROUP BY queue, state ORDER BY queue, state

-- name: load
-- Jobs ready now plus jobs in flight, in the given queues (NULL: all): what the autoscaler scales on.
SELECT
    count(*) FILTER (WHERE state = 'pending' AND run_at <= now()) AS ready,
    count(*) FILTER (WHERE state = 'processing') AS processing
FROM passito_jobs.jobs
WHERE state IN ('pending', 'processing')
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))

-- name: next_run_at
SELECT min(run_at) FROM passito_jobs.jobs
WHERE state = 'pending' AND run_at > now()
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))

-- name: finished_between
SELECT count(*) FILTER (WHERE state IN ('completed', 'failed', 'cancelled')),
       count(*) FILTER (WHERE state = 'failed')
FROM passito_jobs.jobs WHERE id BETWEEN %(first)s AND %(last)s
