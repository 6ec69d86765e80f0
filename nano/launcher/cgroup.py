"""Read the CPU limits a container puts on this process (cgroup v2 and v1).

Two kinds of limit matter: a cpuset (which CPUs the process may run on) and a
CPU quota (how much CPU time it may use, e.g. ``docker --cpus=2``). All paths
hang off ``root`` so tests can point it at a fake tree.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from nano.launcher.cpulist import parse_cpu_list, read_text


@dataclass(frozen=True)
class CgroupLimits:
    """CPU limits found in the process's cgroup; ``None`` means no limit."""

    cpuset: Optional[frozenset] = None
    cpu_quota: Optional[float] = None  # in CPUs, e.g. 1.5
    version: Optional[int] = None

    @property
    def quota_cpus(self) -> Optional[int]:
        """The quota rounded up to whole CPUs (a 1.5-CPU quota can keep 2 threads partly busy)."""
        return None if self.cpu_quota is None else max(1, math.ceil(self.cpu_quota))


def _membership(root: str) -> dict[str, str]:
    """Map controller name ('' for cgroup v2) to this process's cgroup path."""
    text = read_text(os.path.join(root, "proc/self/cgroup")) or ""
    groups: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for name in controllers.split(",") if controllers else [""]:
            groups[name] = path
    return groups


def _candidate_dirs(mount: str, path: str) -> list[str]:
    """The cgroup's own dir and its ancestors, deepest first, ending at the mount root.

    Inside a container the path from /proc/self/cgroup often does not exist in
    the container's view of the mount: the mount root is then the cgroup itself.
    """
    dirs = []
    rel = path.strip("/")
    while rel:
        dirs.append(os.path.join(mount, rel))
        rel = os.path.dirname(rel)
    dirs.append(mount)
    return [d for d in dirs if os.path.isdir(d)]


def _v2_limits(root: str, path: str) -> CgroupLimits:
    mount = os.path.join(root, "sys/fs/cgroup")
    cpuset = quota = None
    for d in _candidate_dirs(mount, path):
        if cpuset is None:
            text = read_text(os.path.join(d, "cpuset.cpus.effective"))
            if text:
                cpuset = frozenset(parse_cpu_list(text))
        text = read_text(os.path.join(d, "cpu.max"))
        if text:
            fields = text.split()
            if fields[0] != "max":
                period = float(fields[1]) if len(fields) > 1 else 100000.0
                q = float(fields[0]) / period
                quota = q if quota is None else min(quota, q)  # the tightest ancestor wins
    return CgroupLimits(cpuset=cpuset, cpu_quota=quota, version=2)


def _v1_controller_dir(root: str, name: str, path: str) -> list[str]:
    base = os.path.join(root, "sys/fs/cgroup")
    for mount_name in (name, "cpu,cpuacct", "cpuacct,cpu"):
        mount = os.path.join(base, mount_name)
        if os.path.isdir(mount):
            return _candidate_dirs(mount, path)
    return []


def _v1_limits(root: str, groups: dict[str, str]) -> CgroupLimits:
    cpuset = quota = None
    for d in _v1_controller_dir(root, "cpuset", groups.get("cpuset", "/")):
        text = (read_text(os.path.join(d, "cpuset.effective_cpus"))
                or read_text(os.path.join(d, "cpuset.cpus")))
        if text:
            cpuset = frozenset(parse_cpu_list(text))
            break
    for d in _v1_controller_dir(root, "cpu", groups.get("cpu", "/")):
        q = read_text(os.path.join(d, "cpu.cfs_quota_us"))
        p = read_text(os.path.join(d, "cpu.cfs_period_us"))
        if q and p and int(q) > 0 and int(p) > 0:
            value = int(q) / int(p)
            quota = value if quota is None else min(quota, value)
    return CgroupLimits(cpuset=cpuset, cpu_quota=quota, version=1)


def read_cgroup_limits(root: str = "/") -> CgroupLimits:
    """Return the cpuset and CPU quota of this process's cgroup, or no limits if none are readable."""
    groups = _membership(root)
    if not groups:
        return CgroupLimits()
    if set(groups) == {""} or os.path.exists(os.path.join(root, "sys/fs/cgroup/cgroup.controllers")):
        return _v2_limits(root, groups.get("", "/"))
    return _v1_limits(root, groups)
