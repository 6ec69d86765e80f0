"""Throughput of one model: one instance on every core vs N pinned single-core instances."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

SETTLE_SECONDS = 0.1


@dataclass
class Throughput:
    """Calls per second of one instance with all cores, and of ``instances`` pinned instances."""

    single: float
    multi: float
    instances: int


def measure_throughput(model: torch.nn.Module, sample: tuple, instances: int, calls: int = 64,
                       threads: int = 0, rounds: int = 5) -> Throughput:
    """Calls/s of ``model(*args, **kwargs)`` served serially by this process (``threads``
    threads, 0: as set) and by ``instances`` pinned workers; the two are timed in
    alternating rounds (medians), so machine noise hits both alike."""
    import statistics

    from nano.multiprocess.pool import MultiInstanceModel

    args, kwargs = sample
    item = kwargs if not args else (args if not kwargs else None)
    if item is None:
        raise ValueError("throughput needs all-positional or all-keyword inputs")
    if threads:
        torch.set_num_threads(threads)

    def serial() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for _ in range(calls):
                model(*args, **kwargs)
        return calls / (time.perf_counter() - start)

    singles, multis = [], []
    with MultiInstanceModel(model, instances, cores_per_process=1) as pool:
        pool([item] * (2 * instances))  # warm every worker
        serial()
        for _ in range(rounds):
            singles.append(serial())
            # The runtime's threads in this process spin for a while after the serial calls
            # (ONNX Runtime's do); let them settle so they do not eat into the workers' cores.
            time.sleep(SETTLE_SECONDS)
            start = time.perf_counter()
            pool([item] * calls)
            multis.append(calls / (time.perf_counter() - start))
    return Throughput(statistics.median(singles), statistics.median(multis), instances)
