"""``python -m nano.launcher.rank_exec -- CMD``: pin one torchrun rank to its cores, then exec CMD.

Reads LOCAL_RANK (from torchrun) and the core sets ``bigdl-nano-run`` put in
NANO_RANK_CPU_SETS; the process keeps its pid, so torchrun supervises CMD itself.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from nano.launcher.cli_common import OneLineParser, UsageError, parse_with_command, run_cli
from nano.launcher.cpulist import parse_cpu_list
from nano.launcher.pinned_instances import instance_environment
from nano.launcher.topology import read_topology
from nano.launcher.torchrun import ALLOCATOR_VAR, CPU_SETS_VAR, OPENMP_VAR


def _main(argv: list[str]) -> int:
    _, command = parse_with_command(OneLineParser(prog="rank_exec"), argv)
    if not command:
        raise UsageError("usage: python -m nano.launcher.rank_exec -- CMD [ARGS]")
    if "LOCAL_RANK" not in os.environ or CPU_SETS_VAR not in os.environ:
        raise UsageError("rank_exec runs under bigdl-nano-run --nnodes (LOCAL_RANK and "
                         f"{CPU_SETS_VAR} are not set)")
    sets = [parse_cpu_list(s) for s in os.environ[CPU_SETS_VAR].split(";")]
    local_rank = int(os.environ["LOCAL_RANK"])
    cpus = sets[local_rank % len(sets)]
    env = instance_environment(read_topology(), local_rank, cpus, len(sets), os.environ,
                               allocator=os.environ.get(ALLOCATOR_VAR, "auto"),
                               openmp=os.environ.get(OPENMP_VAR, "gnu"))
    os.sched_setaffinity(0, set(cpus))
    try:
        os.execvpe(command[0], list(command), env)
    except OSError as e:
        raise UsageError(f"cannot run {command[0]!r}: {e.strerror}") from None
    return 1  # not reached


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m nano.launcher.rank_exec``."""
    return run_cli(_main, argv, "nano.launcher.rank_exec")


if __name__ == "__main__":
    sys.exit(main())
