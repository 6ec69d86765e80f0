"""A reaper that outlives the launcher just long enough to end what it started.

A launcher killed with SIGKILL runs no cleanup, and the kernel's parent-death signal
(``PR_SET_PDEATHSIG``) reaches only its direct children: an instance's own children, or
an instance that ignores SIGTERM, lived on. So before it starts anything the launcher
forks a reaper in a session of its own and tells it, through a pipe, each process group
it starts. When the pipe closes (the launcher finished, or died in any way) the reaper
sends those groups SIGTERM, then SIGKILL to what is left after GRACE_SECONDS, and exits.
"""

from __future__ import annotations

import os
import signal
import time

GRACE_SECONDS = 2.0
_ENDED = b"ended\n"


class GroupReaper:
    """``watch(pgid)`` for each group started; ``close()`` when done (also on error)."""

    def __init__(self) -> None:
        read, self._write = os.pipe()
        self._pid = os.fork()
        if self._pid == 0:  # the reaper: nothing but system calls, then _exit
            status = 1
            try:
                os.close(self._write)
                _reap(read)
                status = 0
            finally:
                os._exit(status)
        os.close(read)

    def watch(self, pgid: int) -> None:
        os.write(self._write, f"{pgid}\n".encode())

    def close(self, ended: bool = False) -> None:
        """Let the reaper end the groups and wait for it. ``ended``: the launcher ended and
        reaped them itself, so the reaper signals nothing (their ids may be reused now)."""
        if self._write >= 0:
            if ended:
                os.write(self._write, _ENDED)
            os.close(self._write)
            self._write = -1
            os.waitpid(self._pid, 0)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal(groups: list[int], sig: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(read: int) -> None:
    os.setsid()  # out of the launcher's group: a Ctrl-C or a group kill leaves it running
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    data = b""
    while True:
        chunk = os.read(read, 4096)
        if not chunk:  # every write end closed: the launcher is done or dead
            break
        data += chunk
    if data.endswith(_ENDED):
        return
    groups = [int(g) for g in data.split()]
    _signal(groups, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    while any(_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal(groups, signal.SIGKILL)
