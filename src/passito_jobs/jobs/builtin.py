"""Deprecated: use `passito_jobs.builtin` (this module goes in the next release)."""

from passito_jobs.builtin import *  # noqa: F403
