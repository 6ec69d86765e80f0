"""What the fault tests check: processes by PID, temporary directories by count."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil

BIN = os.path.dirname(sys.executable)
TEMP_PATTERNS = ("nano-isolation-*", "nano-optimize-*", "nano-multi-*", "nano-generation-*",
                 "nano-onnx-*")


def command(name: str) -> str:
    return os.path.join(BIN, name)


def nano_temp_dirs() -> set:
    """Nano's temporary directories now present (compare before and after)."""
    root = tempfile.gettempdir()
    return {p for pattern in TEMP_PATTERNS for p in glob.glob(os.path.join(root, pattern))}


def descendants(pid: int) -> set:
    try:
        return {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def still_running(pids) -> list:
    """The PIDs that are alive and not zombies."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_gone(pids, seconds: float = 10.0) -> list:
    """Wait until none of ``pids`` runs; return those still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while still_running(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return still_running(pids)


def kill_all(pids) -> None:
    """Clean up after a failing test, so one failure does not leave processes behind."""
    for pid in still_running(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _terminal_signals() -> None:
    """In the child: SIGINT and SIGHUP as a terminal's job has them. A suite started in the
    background (``&`` in a script, ``nohup``) passes them on ignored, and a command told
    to stop by them would not."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def start(args, cwd=None, env=None, own_group: bool = False) -> subprocess.Popen:
    """Start a command; ``own_group``: in a new session, as a shell starts a job, so that
    ``os.killpg(proc.pid, SIGINT)`` is what Ctrl-C in a terminal does."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=env, start_new_session=own_group,
                            preexec_fn=_terminal_signals)


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
