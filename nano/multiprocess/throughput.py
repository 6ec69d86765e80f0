"""Throughput of one model: one instance on every core vs N pinned single-core instances."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class Throughput:
    """Calls per second of one instance with all cores, and of ``instances`` pinned instances."""

    single: float
    multi: float
    instances: int

    @property
    def ratio(self) -> float:
        return self.multi / self.single


def measure_throughput(model, sample: tuple, instances: int, calls: int = 64,
                       threads: int = 0) -> Throughput:
    """Time ``calls`` calls of ``model(*args, **kwargs)`` served serially by this process
    (``threads`` threads, 0: as set) and by ``instances`` pinned workers."""
    from nano.multiprocess.pool import MultiInstanceModel

    args, kwargs = sample
    if threads:
        torch.set_num_threads(threads)
    with torch.no_grad():
        for _ in range(3):
            model(*args, **kwargs)
        start = time.perf_counter()
        for _ in range(calls):
            model(*args, **kwargs)
        single = calls / (time.perf_counter() - start)
    item = kwargs if not args else (args if not kwargs else None)
    if item is None:
        raise ValueError("throughput needs all-positional or all-keyword inputs")
    with MultiInstanceModel(model, instances, cores_per_process=1) as pool:
        pool([item] * (2 * instances))  # warm every worker
        start = time.perf_counter()
        pool([item] * calls)
        multi = calls / (time.perf_counter() - start)
    return Throughput(single, multi, instances)
