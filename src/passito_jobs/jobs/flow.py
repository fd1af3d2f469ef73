"""Deprecated: use `passito_jobs.outpass.flow` (this module goes in the next release)."""

from passito_jobs.outpass.flow import *  # noqa: F403
