"""Start N copies of a command, each pinned to its own cores with its own tuned environment."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from nano.launcher.cpulist import format_cpu_list
from nano.launcher.environment import apply_plan, plan_environment
from nano.launcher.group_reaper import GroupReaper
from nano.launcher.pinning import child_setup
from nano.launcher.termination import kill_group
from nano.launcher.topology import Topology

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceSpec:
    """One instance to start: its index, CPUs and full environment."""

    index: int
    cpus: tuple
    env: dict


def instance_environment(topology: Topology, index: int, cpus: Sequence[int], ninstances: int,
                         env: Mapping[str, str], allocator: str = "auto",
                         openmp: str = "gnu") -> dict[str, str]:
    """The full environment of instance ``index`` pinned to ``cpus``: tuned for those cores."""
    own = Topology.build(topology.cpus, cpus, None, topology.source, topology.flags)
    plan = plan_environment(own, env, allocator=allocator, openmp=openmp,
                            threads=len(own.usable_cores()))
    child_env = apply_plan(plan, env)
    child_env.update({
        "NANO_INSTANCE_ID": str(index),
        "NANO_NUM_INSTANCES": str(ninstances),
        "NANO_INSTANCE_CPUS": format_cpu_list(cpus),
    })
    return child_env


def instance_specs(topology: Topology, cpu_sets: Sequence[Sequence[int]], env: Mapping[str, str],
                   allocator: str = "auto", openmp: str = "gnu",
                   extra_env: Optional[Mapping[str, str]] = None) -> list[InstanceSpec]:
    """Build each instance's environment: tuned for its own cores, plus NANO_INSTANCE_* ids."""
    specs = []
    for i, cpus in enumerate(cpu_sets):
        child_env = instance_environment(topology, i, cpus, len(cpu_sets), env, allocator, openmp)
        child_env.update(extra_env or {})
        specs.append(InstanceSpec(i, tuple(sorted(cpus)), child_env))
    return specs


def _pump(stream, index: int, sink, log) -> None:
    """Copy a child's output line by line, prefixed with its instance index."""
    prefix = f"[{index}] ".encode()
    for line in iter(stream.readline, b""):
        if log is not None:
            log.write(line)
            log.flush()
        else:
            sink.write(prefix + line)
            sink.flush()
    stream.close()


# After the instances end, how long their output is still read: a background process an
# instance left behind can hold the pipe open for ever.
PIPE_GRACE_SECONDS = 2.0


def run_instances(command: Sequence[str], specs: Sequence[InstanceSpec],
                  log_dir: Optional[str] = None) -> int:
    """Run the instances to completion; forward SIGINT/SIGTERM/SIGHUP; return the worst status.

    Each instance leads its own process group, and a signal goes to the whole group,
    so whatever an instance started gets it too (a second signal kills the groups); once
    the instances are gone, what is left of their groups is killed. Output is prefixed
    with ``[i]`` on stdout, or written to ``log_dir/instance_i.log``, and read until the
    instances end (plus PIPE_GRACE_SECONDS). Returns 0 when every instance succeeded, else the first
    failing status (128 + signal number for an instance killed by a signal).
    """
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    procs, pumps, logs = [], [], []
    sink = sys.stdout.buffer
    reaper = GroupReaper()  # ends the groups however this process ends, SIGKILL included
    try:
        for spec in specs:
            log = open(os.path.join(log_dir, f"instance_{spec.index}.log"), "wb") if log_dir else None
            logs.append(log)
            proc = subprocess.Popen(list(command), env=spec.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=child_setup(spec.cpus), start_new_session=True)
            procs.append(proc)
            reaper.watch(proc.pid)
            t = threading.Thread(target=_pump, args=(proc.stdout, spec.index, sink, log), daemon=True)
            t.start()
            pumps.append(t)
    except OSError as e:
        for p in procs:
            p.kill()
        reaper.close()
        raise FileNotFoundError(f"cannot run {command[0]!r}: {e.strerror}") from None

    signalled = []

    def forward(signum, _frame):
        signalled.append(signum)
        for p in procs:  # a second signal does not ask again
            kill_group(p.pid, signum if len(signalled) == 1 else signal.SIGKILL)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    ended = False
    try:
        statuses = [p.wait() for p in procs]
        for p in procs:  # what an instance left running must not outlive the launcher
            kill_group(p.pid, signal.SIGKILL)
        ended = True
        deadline = time.monotonic() + PIPE_GRACE_SECONDS
        for t in pumps:
            t.join(max(deadline - time.monotonic(), 0))
    finally:
        reaper.close(ended)
        for s, handler in previous.items():
            signal.signal(s, handler)
        for t, log in zip(pumps, logs):
            if log is not None and not t.is_alive():
                log.close()
    worst = 0
    for spec, status in zip(specs, statuses):
        if status != 0:
            code = 128 - status if status < 0 else status
            how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
            logger.warning("instance %d (cpus %s) %s", spec.index, format_cpu_list(spec.cpus), how)
            worst = worst or code
    return worst
