"""`python -m passito_jobs` is `passito-jobs`."""

import sys

from passito_jobs.cli import main

sys.exit(main())
