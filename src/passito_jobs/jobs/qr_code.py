"""Deprecated: use `passito_jobs.outpass.qr_code` (this module goes in the next release)."""

from passito_jobs.outpass.qr_code import *  # noqa: F403
