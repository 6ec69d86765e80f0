"""Is this process one rank of a torch.distributed job, and which cores does it own?

Both Nano's own local launcher and ``torchrun`` (what ``bigdl-nano-run --nnodes``
runs) start each rank with the same environment variables (RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR/PORT,
TORCHELASTIC_RUN_ID), so one code path serves both.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

from nano.launcher.cpulist import format_cpu_list, parse_cpu_list
from nano.launcher.schedule import schedule_instances
from nano.launcher.topology import read_topology

_RANK_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK")


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in the job."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int

    @property
    def num_nodes(self) -> int:
        return max(1, self.world_size // self.local_world_size)


def current_rank(env: Optional[Mapping[str, str]] = None) -> Optional[RankInfo]:
    """The rank this process was started as (torchrun-style variables), or None outside a job."""
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" not in env or any(v not in env for v in _RANK_VARS):
        return None
    return RankInfo(int(env["RANK"]), int(env["LOCAL_RANK"]), int(env["WORLD_SIZE"]),
                    int(env["LOCAL_WORLD_SIZE"]), int(env["GROUP_RANK"]))


def rank_environment(rank: int, world_size: int, master_port: int, run_id: str) -> dict[str, str]:
    """The variables a single-node launcher gives local rank ``rank`` (what torchrun would set)."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
            "LOCAL_WORLD_SIZE": str(world_size), "GROUP_RANK": "0", "NODE_RANK": "0",
            "ROLE_RANK": str(rank), "ROLE_WORLD_SIZE": str(world_size),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port),
            "TORCHELASTIC_RUN_ID": run_id}


def settle_rank(info: RankInfo) -> list[int]:
    """Pin this rank to its cores (unless a Nano launcher already did) and size torch's thread pool.

    Under plain ``torchrun`` the local ranks split this machine's cores with the
    launcher's scheduler; under ``bigdl-nano-run`` or Nano's own launcher the
    affinity mask is already set (and NANO_INSTANCE_CPUS names it). Returns the CPUs this
    rank runs on.
    """
    if "NANO_INSTANCE_CPUS" not in os.environ:
        topology = read_topology()
        cores = len(topology.usable_cores())
        sets = schedule_instances(topology, info.local_world_size,
                                  allow_oversubscribe=info.local_world_size > cores)
        os.sched_setaffinity(0, sets[info.local_rank])
        os.environ["NANO_INSTANCE_CPUS"] = format_cpu_list(sets[info.local_rank])
        os.environ["OMP_NUM_THREADS"] = str(len(sets[info.local_rank]))
    # Not sched_getaffinity: with OMP_PROC_BIND set, GNU OpenMP narrows the main thread's mask
    # to the first core of the set when torch loads.
    cpus = parse_cpu_list(os.environ["NANO_INSTANCE_CPUS"])
    torch.set_num_threads(len(cpus))
    atexit.register(_destroy_process_group)
    return cpus


def _destroy_process_group() -> None:
    """Leave the process group before interpreter teardown; gloo aborts the process otherwise."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:
            pass
