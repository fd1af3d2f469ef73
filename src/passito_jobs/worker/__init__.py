"""The worker runtime: claim loop, concurrency, signals, heartbeats, HTTP probes and metrics."""
