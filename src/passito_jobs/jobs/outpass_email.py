"""Deprecated: use `passito_jobs.outpass.outpass_email` (this module goes in the next release)."""

from passito_jobs.outpass.outpass_email import *  # noqa: F403
