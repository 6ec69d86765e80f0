"""One training rank started by Nano's local launcher: run the job, report back, leave cleanly.

``python -m nano.trainer JOB RESULT`` (subprocess backend) or
:func:`spawn_entry` (spawn backend). JOB is written by :func:`save_job`;
rank 0 writes the callable's return value to RESULT, every rank that fails
writes its exception and traceback to ``RESULT.rank<N>.err``.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from typing import Any


def error_path(result_path: str, rank: int) -> str:
    return f"{result_path}.rank{rank}.err"


def run_job(job_path: str, result_path: str) -> int:
    """Run the pickled job as this rank; return the process exit status."""
    rank = int(os.environ.get("RANK", "0"))
    try:
        job = load_job(job_path)
        value = job()
        if rank == 0:
            import cloudpickle
            with open(result_path + ".tmp", "wb") as f:
                f.write(cloudpickle.dumps(value))
            os.replace(result_path + ".tmp", result_path)
        return 0
    except BaseException as e:  # noqa: BLE001 - every failure must reach the caller
        with open(error_path(result_path, rank), "wb") as f:
            pickle.dump({"type": type(e).__name__, "message": str(e),
                         "traceback": traceback.format_exc()}, f)
        return 1
    finally:
        from nano.trainer.distributed import _destroy_process_group
        _destroy_process_group()


def save_job(job: Any, path: str) -> None:
    """Write ``job`` with the caller's import path; functions and classes from ``__main__`` or
    ``python -c`` travel by value (cloudpickle), so no ``__main__`` guard is needed."""
    import cloudpickle
    with open(path, "wb") as f:
        pickle.dump((list(sys.path), cloudpickle.dumps(job)), f)


def load_job(path: str) -> Any:
    """Read a job written by :func:`save_job`, importing modules from the caller's path."""
    with open(path, "rb") as f:
        sys_path, blob = pickle.load(f)
    sys.path[:] = list(dict.fromkeys(sys.path + sys_path))
    return pickle.loads(blob)


def spawn_entry(job_path: str, result_path: str, env: dict, cpus: tuple) -> None:
    """Target of a ``multiprocessing`` spawn child: take the rank's environment and cores, run."""
    os.environ.update({k: v for k, v in env.items() if k != "LD_PRELOAD"})
    os.sched_setaffinity(0, set(cpus))
    sys.exit(run_job(job_path, result_path))
