"""Run a job in N pinned local processes that form one gloo process group; return rank 0's value.

``subprocess`` starts ``python -m nano.trainer`` per rank (affinity mask
set before exec, tuned environment incl. allocator preload); it works from a
script without a ``__main__`` guard, from ``python -c`` and from notebooks.
``spawn`` uses :mod:`multiprocessing`'s spawn start method, which re-imports the
caller's ``__main__`` and therefore needs the usual ``if __name__ == "__main__"``
guard. If any rank fails, the others are stopped (they would otherwise wait in
a collective forever) and :class:`WorkerError` reports the first failure.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing.process import BaseProcess
from typing import Any, Callable, Optional, Union

from nano.errors import NanoError
from nano.launcher.cpulist import format_cpu_list
from nano.launcher.pinned_instances import instance_specs
from nano.launcher.pinning import child_setup
from nano.launcher.topology import read_topology
from nano.trainer.distributed import rank_environment
from nano.trainer.training_options import TrainingOptions
from nano.trainer.rank_job import error_path, save_job, spawn_entry

# After the first failure the other ranks get this long to exit on their own.
_GRACE_SECONDS = 3.0


class WorkerError(NanoError, RuntimeError):
    """A training process failed; the message names the rank and carries its traceback."""

    def __init__(self, message: str, rank: int, remote_type: Optional[str] = None):
        super().__init__(message)
        self.rank = rank
        self.remote_type = remote_type


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Rank:
    """A started rank, whichever backend started it."""

    def __init__(self, rank: int, cpus: tuple, handle):
        self.rank, self.cpus, self.handle = rank, cpus, handle

    def poll(self) -> Optional[int]:
        if isinstance(self.handle, subprocess.Popen):
            return self.handle.poll()
        return self.handle.exitcode

    def kill(self) -> None:
        if self.poll() is None:
            self.handle.kill()

    def wait(self) -> None:
        if isinstance(self.handle, subprocess.Popen):
            self.handle.wait()
        else:
            self.handle.join()


def _start(options: TrainingOptions, job_path: str, result_path: str) -> list[_Rank]:
    world = options.num_processes
    port, run_id = free_port(), f"nano-{uuid.uuid4().hex[:12]}"
    specs = instance_specs(read_topology(), options.cpu_sets, os.environ)
    spawn = multiprocessing.get_context("spawn")
    ranks: list[_Rank] = []
    try:
        for spec in specs:
            env = dict(spec.env, **rank_environment(spec.index, world, port, run_id))
            handle: Union[subprocess.Popen, BaseProcess]
            if options.backend == "subprocess":
                handle = subprocess.Popen([sys.executable, "-m", "nano.trainer", job_path,
                                           result_path], env=env, preexec_fn=child_setup(spec.cpus))
            else:
                process = spawn.Process(target=spawn_entry, args=(job_path, result_path, env,
                                                                   spec.cpus), daemon=True)
                process.start()
                handle = process
            ranks.append(_Rank(spec.index, spec.cpus, handle))
    except BaseException:
        for r in ranks:
            r.kill()
        raise
    return ranks


def _describe(rank: _Rank, status: int, result_path: str) -> WorkerError:
    where = f"rank {rank.rank} (cpus {format_cpu_list(rank.cpus)})"
    err = error_path(result_path, rank.rank)
    if os.path.exists(err):
        with open(err, "rb") as f:
            info = pickle.load(f)
        return WorkerError(f"{where} raised {info['type']}: {info['message']}\n"
                           f"--- traceback from {where} ---\n{info['traceback']}",
                           rank.rank, info["type"])
    if status < 0:
        name = signal.Signals(-status).name
        return WorkerError(f"{where} was killed by signal {-status} ({name})", rank.rank)
    return WorkerError(f"{where} exited with status {status} without reporting an error "
                       f"(see its output above)", rank.rank)


def _is_collateral(error: WorkerError) -> bool:
    """A rank that failed only because a peer went away (gloo reports a closed connection)."""
    text = str(error).split("\n", 1)[0]
    return error.remote_type == "DistBackendError" or "gloo" in text or "closed by peer" in text


def _wait(ranks: list[_Rank], result_path: str) -> None:
    """Wait for every rank; on failure, stop the rest and raise the root cause.

    When one rank fails its peers soon fail too (their collectives lose a
    partner), often first; so all failures within the grace period are
    collected and a rank's own error or signal wins over a peer's lost connection.
    """
    failures: dict[int, WorkerError] = {}
    deadline, killed = None, False
    while True:
        statuses = [r.poll() for r in ranks]
        for r, status in zip(ranks, statuses):
            if status is not None and status != 0 and r.rank not in failures and not killed:
                failures[r.rank] = _describe(r, status, result_path)
                if deadline is None:
                    deadline = time.monotonic() + _GRACE_SECONDS
        if all(s is not None for s in statuses):
            break
        if deadline is not None and time.monotonic() > deadline and not killed:
            killed = True  # ranks we kill are not failures of their own
            for r in ranks:
                r.kill()
        time.sleep(0.05)
    if failures:
        raise min(failures.values(), key=lambda e: (_is_collateral(e), e.rank))


def run_distributed(job: Callable[[], Any], options: TrainingOptions) -> Any:
    """Run ``job()`` on every rank (``options.num_processes`` local processes); return rank 0's value."""
    with tempfile.TemporaryDirectory(prefix="nano-train-") as tmp:
        job_path, result_path = os.path.join(tmp, "job.pkl"), os.path.join(tmp, "result.pkl")
        save_job(job, job_path)
        ranks = _start(options, job_path, result_path)
        try:
            _wait(ranks, result_path)
        finally:
            for r in ranks:
                r.kill()
                r.wait()
        with open(result_path, "rb") as f:
            return pickle.load(f)
