-- passito-jobs: fast cancellation. A processing job that is cancelled announces it on channel
-- passito_jobs_cancel (payload: its id), so the worker running it stops the attempt at once
-- instead of at its next heartbeat.
--
-- A trigger rather than a line in passito_jobs.cancel: every way a job is cancelled (the CLI,
-- the dashboard, the PHP app's SQL call, an UPDATE by hand) announces it, and no function is
-- re-created. The notification is part of the transaction that changes the state: it is sent
-- when that transaction commits, and never when it rolls back. Other updates of the state (a
-- completion, the hot path) pay for the trigger's WHEN test alone.
--
-- The notification only asks: the worker checks with a heartbeat which of its jobs it still
-- holds before it stops one, so a stray NOTIFY on the channel stops nothing. A worker in
-- poll-only mode (PASSITO_LISTEN=false) hears nothing and finds out at its next heartbeat.

CREATE FUNCTION passito_jobs.notify_cancelled() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('passito_jobs_cancel', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_cancelled
AFTER UPDATE OF state ON passito_jobs.jobs
FOR EACH ROW
WHEN (OLD.state = 'processing' AND NEW.state = 'cancelled')
EXECUTE FUNCTION passito_jobs.notify_cancelled();
