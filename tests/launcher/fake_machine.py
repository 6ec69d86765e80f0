"""Write fake /sys and /proc trees describing machines we do not have."""

from __future__ import annotations

import os
from typing import Optional

from nano.launcher.cpulist import format_cpu_list


def _write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text + "\n")


def write_sysfs(root, cpus: list[tuple[int, int, int, int]], online: Optional[str] = None) -> None:
    """``cpus``: (cpu id, socket, core id as the kernel numbers it, numa node)."""
    ids = [c[0] for c in cpus]
    _write(root, "sys/devices/system/cpu/online", online or format_cpu_list(ids))
    siblings: dict[tuple, list[int]] = {}
    for cpu, socket, core, _ in cpus:
        siblings.setdefault((socket, core), []).append(cpu)
    nodes: dict[int, list[int]] = {}
    for cpu, socket, core, node in cpus:
        topo = f"sys/devices/system/cpu/cpu{cpu}/topology"
        _write(root, f"{topo}/physical_package_id", str(socket))
        _write(root, f"{topo}/core_id", str(core))
        _write(root, f"{topo}/thread_siblings_list", format_cpu_list(siblings[(socket, core)]))
        nodes.setdefault(node, []).append(cpu)
    for node, members in nodes.items():
        _write(root, f"sys/devices/system/node/node{node}/cpulist", format_cpu_list(members))


def two_socket_smt(cores_per_socket: int = 28) -> list[tuple[int, int, int, int]]:
    """A 2-socket SMT server numbered like Linux does: all first threads, then all siblings."""
    n = 2 * cores_per_socket
    cpus = []
    for thread in range(2):
        for i in range(n):
            socket = i // cores_per_socket
            cpus.append((thread * n + i, socket, i % cores_per_socket, socket))
    return cpus


def write_cpuinfo(root, cpus: list[tuple[int, int, int]], flags: str = "fpu avx512f") -> None:
    """``cpus``: (processor, physical id, core id)."""
    blocks = [f"processor\t: {p}\nphysical id\t: {s}\ncore id\t\t: {c}\nflags\t\t: {flags}"
              for p, s, c in cpus]
    _write(root, "proc/cpuinfo", "\n\n".join(blocks))


def write_cgroup_v2(root, cpuset: Optional[str] = None, cpu_max: Optional[str] = None,
                    path: str = "/") -> None:
    _write(root, "proc/self/cgroup", f"0::{path}")
    base = os.path.join("sys/fs/cgroup", path.strip("/"))
    _write(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu memory")
    if cpuset is not None:
        _write(root, f"{base}/cpuset.cpus.effective", cpuset)
    if cpu_max is not None:
        _write(root, f"{base}/cpu.max", cpu_max)


def write_cgroup_v1(root, cpuset: Optional[str] = None, quota_us: int = -1,
                    period_us: int = 100000) -> None:
    _write(root, "proc/self/cgroup", "4:cpuset:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/")
    if cpuset is not None:
        _write(root, "sys/fs/cgroup/cpuset/cpuset.cpus", cpuset)  # the container's view: mount root
    _write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", str(quota_us))
    _write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", str(period_us))
