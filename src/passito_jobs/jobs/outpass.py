"""Deprecated: use `passito_jobs.outpass.model` (this module goes in the next release)."""

from passito_jobs.outpass.model import *  # noqa: F403
