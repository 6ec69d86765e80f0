"""Pin a process to CPUs with an affinity mask, which every threading runtime honours.

Intel OpenMP's KMP_AFFINITY only binds Intel OpenMP; GNU OpenMP, ONNX Runtime
and OpenVINO size and place their thread pools from the process affinity mask,
so the mask is what the launcher sets.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import Callable, Iterable

_PR_SET_PDEATHSIG = 1


def pin_current_process(cpus: Iterable[int]) -> None:
    """Restrict the calling process (and the threads it starts later) to ``cpus``."""
    os.sched_setaffinity(0, set(cpus))


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when its parent dies (Linux), so none is orphaned."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def child_setup(cpus: Iterable[int]) -> Callable[[], None]:
    """A ``preexec_fn`` for subprocess: pin to ``cpus`` and die with the launcher."""
    cpu_set = set(cpus)

    def setup() -> None:
        _die_with_parent()
        os.sched_setaffinity(0, cpu_set)

    return setup
