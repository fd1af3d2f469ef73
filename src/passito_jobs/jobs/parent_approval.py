"""Deprecated: use `passito_jobs.outpass.parent_approval` (this module goes in the next release)."""

from passito_jobs.outpass.parent_approval import *  # noqa: F403
