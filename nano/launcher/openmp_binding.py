"""Undo what OpenMP thread binding does to the main thread, before another runtime starts its
threads.

With ``OMP_PROC_BIND``/``OMP_PLACES`` set (``bigdl-nano-init`` sets them) GNU OpenMP binds
the thread that loads it, Python's main thread when torch is imported, to its first place:
one core. ONNX Runtime's and OpenVINO's worker threads inherit that mask and OpenVINO sizes
its pool from it, so under the tuned environment every one of them ran on a single core:
an ONNX Runtime MLP took 16.1 ms instead of 3.7, OpenVINO's INT4 decode step 25 ms instead
of 15 (2 cores), and OpenVINO's bf16 compile of a 4-layer Llama divided by zero (SIGFPE).
PyTorch issue 91989 and OpenVINO issue 15597 report the same with Intel OpenMP.

The places themselves still name every CPU the process was given, so the fix is exact:
widen the calling thread back to their union. OpenMP's own workers keep their binding.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Optional

logger = logging.getLogger(__name__)

_LIBRARIES = ("libiomp5", "libgomp")  # a preloaded Intel OpenMP answers for both


def _loaded_openmp() -> Optional[str]:
    """The path of the OpenMP runtime loaded in this process (Intel's first), if any."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if ".so" in line}
    except OSError:
        return None
    for name in _LIBRARIES:
        found = sorted(p for p in paths if os.path.basename(p).startswith(name))
        if found:
            return found[0]
    return None


def openmp_place_cpus() -> Optional[set]:
    """Every CPU in the loaded OpenMP runtime's places; None where nothing binds threads
    (no OpenMP loaded, binding off, or no places)."""
    path = _loaded_openmp()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)  # already loaded: the same copy, not a second one
        if lib.omp_get_proc_bind() == 0:  # omp_proc_bind_false
            return None
        cpus: set = set()
        for place in range(lib.omp_get_num_places()):
            ids = (ctypes.c_int * lib.omp_get_place_num_procs(place))()
            lib.omp_get_place_proc_ids(place, ids)
            cpus.update(ids)
    except (OSError, AttributeError):  # an OpenMP before 4.5 has no place API
        return None
    return cpus or None


def unbind_main_thread() -> None:
    """Widen the calling thread's affinity to the OpenMP places' CPUs if OpenMP narrowed it;
    call before a runtime that starts its own threads builds its pool."""
    cpus = openmp_place_cpus()
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return
    mine = os.sched_getaffinity(0)
    if mine < cpus:
        os.sched_setaffinity(0, cpus)
        logger.debug("widened the calling thread from CPUs %s to OpenMP's places %s",
                     sorted(mine), sorted(cpus))
