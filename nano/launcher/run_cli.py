"""``bigdl-nano-run``: start N pinned instances of a command on this machine.

Usage::

    bigdl-nano-run --ninstances 2 -- python serve.py
    bigdl-nano-run --ninstances 4 --cores-per-instance 7 --nodes-list 0 --log-dir logs -- ./bench
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from nano.launcher.cli_common import (OneLineParser, UsageError, add_environment_flags,
                                      positive_int, run_cli, split_command)
from nano.launcher.cpulist import format_cpu_list, parse_cpu_list
from nano.launcher.launch import instance_specs, run_instances
from nano.launcher.schedule import SchedulingError, schedule_instances
from nano.launcher.topology import read_topology


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
    add_environment_flags(p)
    return p


def _main(argv: list[str]) -> int:
    options, command = split_command(argv)
    args = _parser().parse_args(options)
    if not command:
        raise UsageError("no command given; put it after '--', e.g. "
                         "bigdl-nano-run --ninstances 2 -- python infer.py")
    nodes = None
    if args.nodes_list is not None:
        try:
            nodes = parse_cpu_list(args.nodes_list)
        except ValueError:
            raise UsageError(f"--nodes-list takes node ids like 0 or 0,1, got {args.nodes_list!r}")
    topology = read_topology()
    try:
        cpu_sets = schedule_instances(topology, args.ninstances, args.cores_per_instance, nodes,
                                      args.allow_oversubscribe)
    except SchedulingError as e:
        raise UsageError(str(e)) from None
    used = [c for s in cpu_sets for c in s]
    if len(used) != len(set(used)):
        print("bigdl-nano-run: warning: instances share cores (--allow-oversubscribe); expect "
              "them to slow each other down", file=sys.stderr)
    specs = instance_specs(topology, cpu_sets, os.environ, allocator=args.allocator,
                           openmp="intel" if args.intel_openmp else "gnu")
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
