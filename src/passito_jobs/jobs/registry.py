"""Deprecated: use `passito_jobs.registry` (this module goes in the next release)."""

from passito_jobs.registry import *  # noqa: F403
