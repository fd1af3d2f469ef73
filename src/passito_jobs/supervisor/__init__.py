"""Scaling workers to the queue: the pure policy, the kopf operator and the local supervisor."""
