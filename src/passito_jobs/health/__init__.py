"""Queue health: checks with a report (`passito-jobs health`) and a Prometheus exporter of queue
gauges (`passito-jobs health serve`). Both read the same single statement, `Store.queue_stats`.
"""
