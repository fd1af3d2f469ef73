"""The benchmark harness behind `make bench` and `make bench-peers`.

It drives passito-jobs only through its public, stable surfaces (the `passito-jobs` command,
`passito_jobs.dispatch`/`dispatch_many`, the built-in Noop job type and SQL on the
`passito_jobs.jobs` table), so it keeps working while the package's insides move, and it can
run two checkouts side by side (`--compare`). Modules named `*_side.py` run in the measured
system's own Python (a worker, a producer, a fill); the others run in the harness.
"""
