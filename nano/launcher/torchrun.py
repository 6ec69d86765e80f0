"""One node of a multi-node job: ``torchrun`` with c10d rendezvous, every local rank pinned and tuned.

``bigdl-nano-run --nnodes N ...`` builds the torchrun command here and execs it.
torchrun starts each local rank as ``python -m nano.launcher.rank_exec -- CMD``,
which pins itself to its share of this node's cores, takes the tuned
environment for those cores (threads, OpenMP binding, allocator preload) and
execs CMD; torchrun still supervises (and on failure restarts) the real process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from nano.launcher.cpulist import format_cpu_list
from nano.launcher.network import route_to

CPU_SETS_VAR = "NANO_RANK_CPU_SETS"
ALLOCATOR_VAR = "NANO_RANK_ALLOCATOR"
OPENMP_VAR = "NANO_RANK_OPENMP"


@dataclass(frozen=True)
class NodeJob:
    """Where this node sits in the job and how to reach the others."""

    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    nproc_per_node: int
    max_restarts: int = 0
    run_id: str = "nano"

    def __post_init__(self):
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"--node-rank must be in 0..{self.nnodes - 1} for --nnodes "
                             f"{self.nnodes}, got {self.node_rank}")
        if not 0 < self.master_port < 65536:
            raise ValueError(f"--master-port must be a TCP port (1-65535), got {self.master_port}")


def torchrun_command(job: NodeJob, command: Sequence[str], local_addr: str) -> list[str]:
    """The torchrun command line for this node; node 0 hosts the rendezvous store."""
    return [sys.executable, "-m", "torch.distributed.run",
            "--nnodes", str(job.nnodes), "--node-rank", str(job.node_rank),
            "--nproc-per-node", str(job.nproc_per_node),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{job.master_addr}:{job.master_port}",
            "--rdzv-id", job.run_id, "--rdzv-conf", f"is_host={int(job.node_rank == 0)}",
            "--local-addr", local_addr, "--max-restarts", str(job.max_restarts),
            "--no-python", sys.executable, "-m", "nano.launcher.rank_exec", "--", *command]


def node_environment(env: Mapping[str, str], cpu_sets: Sequence[Sequence[int]], allocator: str,
                     openmp: str, ifname: str | None) -> dict[str, str]:
    """torchrun's environment: the local ranks' core sets and tuning choices for rank_exec.

    GLOO_SOCKET_IFNAME is set to the interface that reaches the master (unless the
    user set it): gloo otherwise binds to whatever the hostname resolves to.
    Workers get their own store (not the rendezvous one) so restarts work.
    """
    out = dict(env)
    out[CPU_SETS_VAR] = ";".join(format_cpu_list(s) for s in cpu_sets)
    out[ALLOCATOR_VAR] = allocator
    out[OPENMP_VAR] = openmp
    if ifname and "GLOO_SOCKET_IFNAME" not in out:
        out["GLOO_SOCKET_IFNAME"] = ifname
    # With the rendezvous store shared with the workers, a restarted group can read the
    # previous attempt's gloo addresses and fail to connect (pytorch/pytorch#135712).
    out.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    return out


def run_node(job: NodeJob, command: Sequence[str], cpu_sets: Sequence[Sequence[int]],
             allocator: str, openmp: str, dry_run: bool = False) -> int:
    """Exec torchrun for this node (does not return unless ``dry_run``)."""
    try:
        local_addr, ifname = route_to(job.master_addr)
    except OSError as e:
        raise ValueError(f"cannot reach --master-addr {job.master_addr!r}: {e}") from None
    argv = torchrun_command(job, command, local_addr)
    env = node_environment(os.environ, cpu_sets, allocator, openmp, ifname)
    if dry_run:
        for i, cpus in enumerate(cpu_sets):
            print(f"local rank {i}: cpus {format_cpu_list(cpus)}, OMP_NUM_THREADS={len(cpus)}")
        print(f"GLOO_SOCKET_IFNAME={env.get('GLOO_SOCKET_IFNAME', '')}")
        print(" ".join(argv))
        return 0
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)
    return 1  # not reached
