-- passito_jobs.load(queues): the load the autoscalers scale on, and the lease's worker_id.

-- The load in one row: jobs ready now (pending, run_at reached) and jobs in flight
-- (processing), in the given queues; NULL or an empty array means every queue. The operator's
-- load reader, `passito-jobs supervise` and the chart's KEDA ScaledObject
-- (`SELECT ready + processing FROM passito_jobs.load(ARRAY['emails']::text[])`) all call it,
-- so they count the same jobs. Each count reads a partial index (pending, processing).
CREATE FUNCTION passito_jobs.load(queues text[] DEFAULT NULL)
RETURNS TABLE (ready bigint, processing bigint)
LANGUAGE sql STABLE
AS $$
    SELECT count(*) FILTER (WHERE j.state = 'pending' AND j.run_at <= now()),
           count(*) FILTER (WHERE j.state = 'processing')
    FROM passito_jobs.jobs j
    WHERE j.state IN ('pending', 'processing')
      AND (load.queues IS NULL OR cardinality(load.queues) = 0 OR j.queue = ANY(load.queues));
$$;

-- One name per concept (docs/glossary.md): the lease is held by a worker id, as jobs are.
ALTER TABLE passito_jobs.leases RENAME COLUMN holder TO worker_id;

DROP FUNCTION passito_jobs.acquire_lease(text, text, interval);

-- Take (or keep) the lease for `ttl`: true when this worker holds it now.
CREATE FUNCTION passito_jobs.acquire_lease(lease text, worker_id text, ttl interval) RETURNS boolean
LANGUAGE sql
AS $$
    INSERT INTO passito_jobs.leases AS l (name, worker_id, expires_at)
    VALUES (acquire_lease.lease, acquire_lease.worker_id, now() + acquire_lease.ttl)
    ON CONFLICT (name) DO UPDATE SET worker_id = excluded.worker_id, expires_at = excluded.expires_at
    WHERE l.worker_id = excluded.worker_id OR l.expires_at < now()
    RETURNING true;
$$;
