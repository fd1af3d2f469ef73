"""Deprecated: use `passito_jobs.outpass.rendering` (this module goes in the next release)."""

from passito_jobs.outpass.rendering import *  # noqa: F403
