"""Deprecated: use `passito_jobs.outpass.outpass_pdf` (this module goes in the next release)."""

from passito_jobs.outpass.outpass_pdf import *  # noqa: F403
