"""Pieces shared by the launcher commands: one-line usage errors and the environment flags."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable, NoReturn, Optional, Sequence

from nano.errors import NanoError
from nano.launcher.termination import signals_unwind
from nano.noise import quiet_third_party


class UsageError(NanoError):
    """A mistake in the command line; reported as one line with exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the fix, exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def parse_with_command(parser: argparse.ArgumentParser,
                       argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """``[options] [--] CMD ARGS`` as (options, command): the command starts after ``--`` or
    at the first argument that is not one of ours, so ``sh -c '...'`` keeps its ``-c``."""
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv))
    command = list(args.command)
    return args, command[1:] if command[:1] == ["--"] else command


def add_environment_flags(parser: argparse.ArgumentParser) -> None:
    """The allocator / OpenMP / thread flags that init and run share."""
    alloc = parser.add_mutually_exclusive_group()
    alloc.add_argument("-j", "--jemalloc", dest="allocator", action="store_const", const="jemalloc",
                       help="preload jemalloc")
    alloc.add_argument("-t", "--tcmalloc", dest="allocator", action="store_const", const="tcmalloc",
                       help="preload tcmalloc")
    alloc.add_argument("-c", "--default-allocator", dest="allocator", action="store_const",
                       const="default", help="preload no allocator (glibc malloc)")
    parser.set_defaults(allocator="auto")
    parser.add_argument("-o", "--intel-openmp", action="store_true",
                        help="preload Intel OpenMP (libiomp5 from the intel-openmp wheel) and set "
                             "KMP_AFFINITY/KMP_BLOCKTIME instead of GNU OpenMP binding")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def run_cli(main: Callable[[list[str]], int], argv: Optional[Sequence[str]], prog: str) -> int:
    """Run ``main(argv)``: a UsageError becomes one line and exit status 2, Ctrl-C exit
    status 130; SIGTERM/SIGHUP unwind (see ``termination``); third-party logs are quiet."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    nano_log = logging.getLogger("nano")
    nano_log.addHandler(handler)
    try:
        with signals_unwind(), quiet_third_party():
            return main(list(sys.argv[1:] if argv is None else argv))
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        nano_log.removeHandler(handler)
