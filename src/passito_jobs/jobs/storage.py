"""Deprecated: use `passito_jobs.outpass.storage` (this module goes in the next release)."""

from passito_jobs.outpass.storage import *  # noqa: F403
