"""``bigdl-nano-run``: start N pinned instances of a command on this machine.

Usage::

    bigdl-nano-run --ninstances 2 -- python serve.py
    bigdl-nano-run --ninstances 4 --cores-per-instance 7 --nodes-list 0 --log-dir logs -- ./bench
    bigdl-nano-run --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --nproc-per-node 2 \
        -- python train.py      # one such command on every machine; see nano.launcher.torchrun
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from nano.launcher.cli_common import (OneLineParser, UsageError, add_environment_flags,
                                      positive_int, run_cli, parse_with_command)
from nano.launcher.cpulist import format_cpu_list, parse_cpu_list
from nano.launcher.pinned_instances import instance_specs, run_instances
from nano.launcher.schedule import SchedulingError, schedule_instances
from nano.launcher.topology import read_topology
from nano.launcher.torchrun import NodeJob, run_node
from nano.launcher.writable import unwritable_reason


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="bigdl-nano-run",
        description="Start N copies of CMD, each pinned (affinity mask) to its own physical cores, "
                    "with OMP_NUM_THREADS set to its core count and NANO_INSTANCE_ID / "
                    "NANO_NUM_INSTANCES in its environment.",
        epilog="example: bigdl-nano-run --ninstances 2 -- python infer.py")
    inst = p.add_argument_group("instances on this machine")
    inst.add_argument("--ninstances", type=positive_int, default=1, metavar="N",
                      help="how many copies to start (default 1)")
    inst.add_argument("--cores-per-instance", type=positive_int, metavar="K",
                      help="physical cores per copy (default: usable cores / N)")
    inst.add_argument("--nodes-list", metavar="LIST",
                      help="use only cores of these NUMA nodes, e.g. 0 or 0,1")
    inst.add_argument("--allow-oversubscribe", action="store_true",
                      help="allow more cores to be asked for than exist (copies then share cores)")
    inst.add_argument("--log-dir", metavar="DIR",
                      help="write each copy's output to DIR/instance_I.log instead of prefixing it")
    inst.add_argument("--dry-run", action="store_true",
                      help="print each copy's CPUs and thread count, start nothing")
    multi = p.add_argument_group(
        "several machines (torchrun, c10d rendezvous, gloo)",
        "Giving any of these runs CMD as a torch.distributed job through torchrun: run the same "
        "command on every machine with its own --node-rank; node 0 hosts the rendezvous at "
        "--master-addr:--master-port.")
    multi.add_argument("--nnodes", type=positive_int, metavar="N", help="machines in the job")
    multi.add_argument("--node-rank", type=int, metavar="R", help="this machine's rank (0..N-1)")
    multi.add_argument("--master-addr", metavar="HOST",
                       help="address of node 0, reachable from every node (default 127.0.0.1)")
    multi.add_argument("--master-port", type=int, metavar="PORT",
                       help="free TCP port on node 0 for the rendezvous (default 29500)")
    multi.add_argument("--nproc-per-node", type=positive_int, metavar="K",
                       help="ranks on this machine, each pinned to its own cores (default 1)")
    multi.add_argument("--max-restarts", type=int, metavar="M",
                       help="restart the worker group up to M times when a rank fails (default 0)")
    multi.add_argument("--rdzv-id", metavar="ID", help="job id shared by all nodes (default nano)")
    add_environment_flags(p)
    return p


_MULTI_NODE = ("nnodes", "node_rank", "master_addr", "master_port", "nproc_per_node",
               "max_restarts", "rdzv_id")


def _node_job(args) -> NodeJob:
    if args.ninstances != 1 or args.log_dir:
        raise UsageError("with --nnodes/--nproc-per-node use --nproc-per-node for the ranks on "
                         "this machine, not --ninstances / --log-dir")
    if args.max_restarts is not None and args.max_restarts < 0:
        raise UsageError(f"--max-restarts must be 0 or more, got {args.max_restarts}")
    try:
        return NodeJob(nnodes=args.nnodes or 1, node_rank=args.node_rank or 0,
                       master_addr=args.master_addr or "127.0.0.1",
                       master_port=29500 if args.master_port is None else args.master_port,
                       nproc_per_node=args.nproc_per_node or 1,
                       max_restarts=args.max_restarts or 0, run_id=args.rdzv_id or "nano")
    except ValueError as e:
        raise UsageError(str(e)) from None


def _check_log_dir(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--log-dir {path!r} is a file; give a directory (it is created if "
                         f"missing)")
    reason = unwritable_reason(os.path.join(path, "instance_0.log"))
    if reason:
        raise UsageError(f"--log-dir {path!r}: {reason}")


def _main(argv: list[str]) -> int:
    args, command = parse_with_command(_parser(), argv)
    if not command:
        raise UsageError("no command given; put it after '--', e.g. "
                         "bigdl-nano-run --ninstances 2 -- python infer.py")
    nodes = None
    if args.nodes_list is not None:
        try:
            nodes = parse_cpu_list(args.nodes_list)
        except ValueError:
            raise UsageError(f"--nodes-list takes node ids like 0 or 0,1, got {args.nodes_list!r}")
    if args.log_dir is not None:
        _check_log_dir(args.log_dir)
    multi_node = any(getattr(args, k) is not None for k in _MULTI_NODE)
    job = _node_job(args) if multi_node else None
    topology = read_topology()
    try:
        cpu_sets = schedule_instances(topology, job.nproc_per_node if job else args.ninstances,
                                      args.cores_per_instance, nodes, args.allow_oversubscribe)
    except SchedulingError as e:
        raise UsageError(str(e)) from None
    used = [c for s in cpu_sets for c in s]
    if len(used) != len(set(used)):
        print("bigdl-nano-run: warning: instances share cores (--allow-oversubscribe); expect "
              "them to slow each other down", file=sys.stderr)
    openmp = "intel" if args.intel_openmp else "gnu"
    if job is not None:
        try:
            return run_node(job, command, cpu_sets, args.allocator, openmp, args.dry_run)
        except ValueError as e:
            raise UsageError(str(e)) from None
    specs = instance_specs(topology, cpu_sets, os.environ, allocator=args.allocator,
                           openmp=openmp)
    if args.dry_run:
        for spec in specs:
            print(f"instance {spec.index}: cpus {format_cpu_list(spec.cpus)}, "
                  f"OMP_NUM_THREADS={spec.env['OMP_NUM_THREADS']}, "
                  f"LD_PRELOAD={spec.env.get('LD_PRELOAD', '')}")
        return 0
    try:
        return run_instances(command, specs, args.log_dir)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``bigdl-nano-run``."""
    return run_cli(_main, argv, "bigdl-nano-run")


if __name__ == "__main__":
    sys.exit(main())
