"""``python -m nano.trainer JOB RESULT``: one rank started by :mod:`nano.trainer.local_ranks`."""

import sys

from nano.trainer.rank_job import run_job

sys.exit(run_job(sys.argv[1], sys.argv[2]))
