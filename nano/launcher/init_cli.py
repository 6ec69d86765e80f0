"""``bigdl-nano-init`` and ``bigdl-nano-unset-env``: tune (and untune) the shell environment.

Usage::

    eval "$(bigdl-nano-init)"          # or: source <(bigdl-nano-init)
    bigdl-nano-init --explain          # what would be set, and why
    bigdl-nano-init -t -r 4 -- python train.py   # run one command under it
    eval "$(bigdl-nano-unset-env)"     # put back what was there before
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Optional, Sequence, TYPE_CHECKING

from nano.launcher.cli_common import (OneLineParser, UsageError, add_environment_flags,
                                      positive_int, run_cli, parse_with_command)
from nano.launcher.environment import (apply_plan, plan_environment, plan_restore, render_exports,
                                       render_restore)
from nano.launcher.hugepages import HugePages
from nano.launcher.topology import read_topology

if TYPE_CHECKING:
    from nano.launcher.topology import Topology


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="bigdl-nano-init",
        description="Print shell 'export' lines that tune OpenMP threads and binding and preload a "
                    "faster memory allocator; eval them, or give '-- CMD ARGS' to run CMD under "
                    "them.",
        epilog='examples: eval "$(bigdl-nano-init)"; bigdl-nano-init --explain; '
               "bigdl-nano-init -t -- python train.py")
    add_environment_flags(p)
    p.add_argument("-r", "--threads", type=positive_int, metavar="N",
                   help="OMP_NUM_THREADS (default: usable physical cores)")
    p.add_argument("--explain", action="store_true",
                   help="also print the CPU found and, as comments, why each value was chosen")
    p.add_argument("--dry-run", action="store_true",
                   help="with -- CMD: print the environment and the command, do not run it")
    return p


def explain_header(topology: Topology) -> str:
    """The topology and what the processor computes natively, as shell comments (harmless
    inside eval)."""
    lines = ["CPU found by bigdl-nano-init:", *topology.describe(),
             *topology.capability.describe(), HugePages.probe().describe()]
    return "".join(f"# {line}\n" for line in lines)


def _main(argv: list[str]) -> int:
    args, command = parse_with_command(_parser(), argv)
    topology = read_topology()
    plan = plan_environment(topology, os.environ, allocator=args.allocator,
                            openmp="intel" if args.intel_openmp else "gnu", threads=args.threads)
    for warning in plan.warnings:
        print(f"bigdl-nano-init: warning: {warning}", file=sys.stderr)
    explain = args.explain or args.dry_run
    if command and not args.dry_run:
        env = apply_plan(plan, os.environ)
        try:
            os.execvpe(command[0], command, env)
        except OSError as e:
            raise UsageError(f"cannot run {command[0]!r}: {e.strerror}") from None
    text = (explain_header(topology) if explain else "") + render_exports(plan, explain)
    if command:
        text += f"# would run: {shlex.join(command)}\n"
    sys.stdout.write(text)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``bigdl-nano-init``."""
    return run_cli(_main, argv, "bigdl-nano-init")


def _unset_main(argv: list[str]) -> int:
    OneLineParser(prog="bigdl-nano-unset-env",
                  description="Print shell lines that restore the variables bigdl-nano-init "
                              "changed to their earlier values; eval them: "
                              'eval "$(bigdl-nano-unset-env)"').parse_args(argv)
    to_set, to_unset = plan_restore(os.environ)
    if to_unset == ["NANO_SAVED_ENV"] and not to_set and "NANO_SAVED_ENV" not in os.environ:
        print("bigdl-nano-unset-env: nothing to restore (bigdl-nano-init was not applied in this "
              "shell)", file=sys.stderr)
        return 0
    sys.stdout.write(render_restore(to_set, to_unset))
    return 0


def unset_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``bigdl-nano-unset-env``."""
    return run_cli(_unset_main, argv, "bigdl-nano-unset-env")


if __name__ == "__main__":
    sys.exit(main())
