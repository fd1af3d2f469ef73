-- The migrator's own statements (queue/store.py `Store.migrate`), run only by the queue package.
-- Migrations run in order under one transaction advisory lock, each in the same transaction as
-- its row in schema_migrations, so many pods may migrate at once.

-- name: lock
-- 0x7061737369746f: "passito", one advisory lock for every migrator.
SELECT pg_advisory_xact_lock(31632345877017711)

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS passito_jobs

-- name: create_bookkeeping
CREATE TABLE IF NOT EXISTS passito_jobs.schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())

-- name: applied
SELECT version, checksum FROM passito_jobs.schema_migrations

-- name: record
INSERT INTO passito_jobs.schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)

-- name: installed
SELECT to_regclass('passito_jobs.schema_migrations') IS NOT NULL AS installed

-- name: version
SELECT max(version) AS version FROM passito_jobs.schema_migrations
