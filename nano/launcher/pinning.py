"""Pin a process to CPUs with an affinity mask, which every threading runtime honours.

Intel OpenMP's KMP_AFFINITY only binds Intel OpenMP; GNU OpenMP, ONNX Runtime
and OpenVINO size and place their thread pools from the process affinity mask,
so the mask is what the launcher sets.
"""

from __future__ import annotations

import os
import signal
from typing import Callable, Iterable

from nano.launcher.termination import die_with_parent


def pin_current_process(cpus: Iterable[int]) -> None:
    """Restrict the calling process (and the threads it starts later) to ``cpus``."""
    os.sched_setaffinity(0, set(cpus))


def child_setup(cpus: Iterable[int]) -> Callable[[], None]:
    """A ``preexec_fn`` for subprocess: pin to ``cpus`` and die with the launcher."""
    cpu_set = set(cpus)

    def setup() -> None:
        die_with_parent(signal.SIGTERM)
        os.sched_setaffinity(0, cpu_set)

    return setup
