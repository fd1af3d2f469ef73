"""Deprecated: use `passito_jobs.outpass.cleanup` (this module goes in the next release)."""

from passito_jobs.outpass.cleanup import *  # noqa: F403
