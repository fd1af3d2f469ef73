-- passito-jobs: the dashboard's audit log, and the indexes its job lists walk.
--
-- Every action of `passito-jobs web` (retry, cancel, one job or a filter's worth) is written here
-- in the same transaction as the change itself: who, when, what, which jobs were asked for and
-- which changed. The changes themselves go through passito_jobs.retry and passito_jobs.cancel.

CREATE TABLE passito_jobs.audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,            -- the user name (or "anonymous" on a loopback dashboard)
    role text NOT NULL,             -- viewer or admin
    action text NOT NULL,           -- retry or cancel
    source text NOT NULL,           -- dashboard (an HTML form) or api
    job_ids bigint[] NOT NULL,      -- the jobs the action asked for
    changed_ids bigint[] NOT NULL,  -- those it changed
    filter jsonb                    -- the filter of a bulk action, NULL for named jobs
);

-- The job page lists the actions that touched its job.
CREATE INDEX audit_log_job_ids_idx ON passito_jobs.audit_log USING gin (job_ids);

-- The dead-letter view walks this index newest first: failed and cancelled jobs are found exactly,
-- page after page, however many completed jobs the table holds. Only the end of a failed or
-- cancelled job writes to it: a dispatch, a claim and a completion (the hot path) never do. The
-- other states are paged by windows of the primary key (queue/admin.py).
CREATE INDEX jobs_state_id_idx ON passito_jobs.jobs (state, id) WHERE state IN ('failed', 'cancelled');

-- The created-time filter: a BRIN index is a few pages for millions of rows and costs a write
-- only when a new row lands outside its page range's summary; jobs are created in time order,
-- so each range of pages covers a short span of time.
CREATE INDEX jobs_created_brin ON passito_jobs.jobs USING brin (created_at) WITH (autosummarize = on);
