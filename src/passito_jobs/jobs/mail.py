"""Deprecated: use `passito_jobs.outpass.mail` (this module goes in the next release)."""

from passito_jobs.outpass.mail import *  # noqa: F403
