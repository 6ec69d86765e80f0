"""Inside a Spark task: give this Python worker its own cores and size torch's threads to the task.

Spark runs ``cores / spark.task.cpus`` tasks at once on a machine, each in its own reused
Python worker, and does not say which cores a task may use. Each worker therefore takes a
free slot of ``spark.task.cpus`` cores the first time it runs Nano and keeps it for its
lifetime. Slots are machine-wide (executors sharing a node share them), and a slot is held
by binding an abstract Unix socket, which the kernel releases when the worker exits however
it exits, so no file is left behind.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Optional

import torch

from nano.launcher.cpulist import format_cpu_list
from nano.launcher.topology import read_topology

logger = logging.getLogger(__name__)

_held: dict = {}  # "slot": socket, "cpus": list of CPU ids, kept for the worker's lifetime


def task_cpus() -> int:
    """The cores Spark gives the running task (``spark.task.cpus``); 1 outside a task."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, int(context.cpus())) if context is not None else 1


def _claim(prefix: str, slots: int) -> Optional[tuple[int, socket.socket]]:
    for slot in range(slots):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(f"\0{prefix}-{slot}")
        except OSError:
            sock.close()
            continue
        return slot, sock
    return None


def settle_worker(cpus_per_task: Optional[int] = None) -> list[int]:
    """Pin this worker to a free slot of ``cpus_per_task`` cores (once) and set torch's threads.

    With more workers than slots, a worker keeps its mask and only sizes its threads.
    Returns the CPUs this worker runs on.
    """
    k = cpus_per_task or task_cpus()
    if "cpus" not in _held:
        cores = [c.id for c in read_topology().usable_cores()]
        claimed = _claim(f"nano-spark-{k}cpu", max(1, len(cores) // k))
        if claimed is None:
            _held["cpus"] = sorted(os.sched_getaffinity(0))
        else:
            slot, sock = claimed
            cpus = cores[slot * k:(slot + 1) * k] or cores
            os.sched_setaffinity(0, cpus)
            _held.update(slot=sock, cpus=cpus)
            os.environ["NANO_INSTANCE_CPUS"] = format_cpu_list(cpus)
            logger.info("Spark worker %d pinned to CPUs %s", os.getpid(), format_cpu_list(cpus))
    threads = min(k, len(_held["cpus"]))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return _held["cpus"]
