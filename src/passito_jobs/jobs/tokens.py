"""Deprecated: use `passito_jobs.outpass.tokens` (this module goes in the next release)."""

from passito_jobs.outpass.tokens import *  # noqa: F403
