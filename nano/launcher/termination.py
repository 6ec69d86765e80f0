"""Dying cleanly: SIGTERM/SIGHUP unwind like Ctrl-C, and helper processes die with their parent.

By default SIGTERM and SIGHUP end a Python process on the spot: no ``finally``
runs, so child processes and temporary directories are left behind. Inside
``signals_unwind()`` they raise ``Terminated`` instead, which unwinds through
every ``with``/``finally`` like KeyboardInterrupt; when the outermost such block
has cleaned up, the signal is delivered again with its default action, so the
process still ends the way its sender expects (status 128 + signal).

A SIGKILLed parent runs no code at all: ``die_with_parent()`` asks the kernel
(``PR_SET_PDEATHSIG``, Linux) to signal a helper process when its parent dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from typing import Iterator

UNWINDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_depth = 0


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; raised so that cleanup code runs (not an ``Exception``:
    ``except Exception`` in user code must not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum, _frame):
    raise Terminated(signum)


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    """Within the block, SIGTERM/SIGHUP raise ``Terminated``; at the end of the outermost
    block the signal is re-delivered with its default action. Handlers the program set
    itself are left alone, and so is everything off the main thread."""
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    for s in UNWINDING_SIGNALS:
        if signal.getsignal(s) is signal.SIG_DFL:
            installed[s] = signal.signal(s, _raise_terminated)
    _depth += 1
    try:
        yield
    except Terminated as e:
        if _depth > 1 or not installed:
            raise
        for s, old in installed.items():
            signal.signal(s, old)
        installed = {}
        sys.stdout.flush()
        sys.stderr.flush()
        signal.raise_signal(e.signum)  # default action now: end as the sender asked
        raise  # only reached if the signal is blocked
    finally:
        _depth -= 1
        for s, old in installed.items():
            signal.signal(s, old)


PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux only).

    ``parent_pid`` closes the race where the parent died before this call: then
    the process ends right away.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)


def kill_group(pgid: int, sig: int = signal.SIGKILL, unreaped_leader: bool = False) -> None:
    """Signal process group ``pgid``; nothing happens once every member is gone.

    ``unreaped_leader``: the caller is the leader's parent and has not reaped it, so its
    pid cannot have been reused; signal it too, in case it has not made its group yet.
    """
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    if unreaped_leader:
        try:
            os.kill(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
