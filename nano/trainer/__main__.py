"""``python -m nano.trainer JOB RESULT``: one rank started by :mod:`nano.trainer.launch`."""

import sys

from nano.trainer.worker import run_job

sys.exit(run_job(sys.argv[1], sys.argv[2]))
