"""What CPU this process runs on: sockets, physical cores, SMT siblings, NUMA nodes, usable CPUs.

``read_topology()`` reads sysfs (falling back to /proc/cpuinfo, then to "every
CPU is its own core"), intersects with the affinity mask and the cgroup cpuset,
and returns a plain ``Topology`` value. Everything downstream (scheduling,
environment building) takes a ``Topology``, so tests can describe any machine.
Core ids are never assumed dense or unique across sockets: a physical core is
the set of logical CPUs that share it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional

from nano.launcher.capability import CpuCapability, effective_flags, ignored_features
from nano.launcher.cgroup import CgroupLimits, read_cgroup_limits
from nano.launcher.cpuid import cpuid_flags
from nano.launcher.cpulist import format_cpu_list, parse_cpu_list, read_text
from nano.launcher.openmp_binding import openmp_place_cpus


@dataclass(frozen=True)
class LogicalCpu:
    """One logical CPU (hardware thread) and where it sits."""

    id: int
    core: int  # index of its physical core, unique machine-wide
    socket: int
    node: int = 0


@dataclass(frozen=True)
class Topology:
    """A machine description plus what this process may use of it."""

    cpus: tuple  # tuple[LogicalCpu, ...]
    usable: frozenset  # logical CPU ids this process may run on
    cpu_quota: Optional[float] = None  # cgroup CPU quota in CPUs, None when unlimited
    source: str = "given"  # where the description came from, for --explain
    flags: frozenset = field(default_factory=frozenset)  # ISA flags, e.g. "avx512_bf16"

    @staticmethod
    def build(cpus: Iterable[LogicalCpu], usable: Optional[Iterable[int]] = None,
              cpu_quota: Optional[float] = None, source: str = "given",
              flags: Iterable[str] = ()) -> "Topology":
        """Make a Topology; ``usable`` defaults to every CPU."""
        cpus = tuple(sorted(cpus, key=lambda c: c.id))
        ids = {c.id for c in cpus}
        usable_set = frozenset(ids if usable is None else set(usable) & ids)
        return Topology(cpus, usable_set, cpu_quota, source, frozenset(flags))

    # Derived views -------------------------------------------------------

    @property
    def sockets(self) -> list[int]:
        return sorted({c.socket for c in self.cpus})

    @property
    def nodes(self) -> list[int]:
        return sorted({c.node for c in self.cpus})

    @property
    def threads_per_core(self) -> int:
        counts: dict[int, int] = {}
        for c in self.cpus:
            counts[c.core] = counts.get(c.core, 0) + 1
        return max(counts.values()) if counts else 1

    @property
    def physical_core_count(self) -> int:
        return len({c.core for c in self.cpus})

    def usable_cores(self, nodes: Optional[Iterable[int]] = None) -> list[LogicalCpu]:
        """One logical CPU (the lowest id) per physical core that has a usable CPU.

        Ordered by NUMA node, socket, then CPU id, so consecutive cores are close.
        ``nodes`` restricts the result to those NUMA nodes.
        """
        wanted = None if nodes is None else set(nodes)
        first: dict[int, LogicalCpu] = {}
        for c in self.cpus:
            if c.id not in self.usable or (wanted is not None and c.node not in wanted):
                continue
            if c.core not in first or c.id < first[c.core].id:
                first[c.core] = c
        return sorted(first.values(), key=lambda c: (c.node, c.socket, c.id))

    @property
    def thread_budget(self) -> int:
        """Threads worth running: usable physical cores, capped by the cgroup CPU quota."""
        cores = max(1, len(self.usable_cores()))
        if self.cpu_quota is not None:
            cores = min(cores, max(1, int(self.cpu_quota + 0.5)))
        return cores

    @property
    def capability(self) -> CpuCapability:
        """What the processor computes natively (int8 dot product, bf16, fp16)."""
        return CpuCapability.from_flags(self.flags)

    @property
    def has_bf16(self) -> bool:
        return self.capability.native("bf16")

    def describe(self) -> list[str]:
        """Human-readable lines for reports."""
        cores = self.usable_cores()
        lines = [
            f"sockets: {len(self.sockets)}, NUMA nodes: {len(self.nodes)}, physical cores: "
            f"{self.physical_core_count}, threads per core: {self.threads_per_core}, "
            f"logical CPUs: {len(self.cpus)}",
            f"usable logical CPUs: {format_cpu_list(self.usable)} "
            f"({len(self.usable)}), usable physical cores: {len(cores)} "
            f"(one CPU each: {format_cpu_list(c.id for c in cores)})",
        ]
        if self.cpu_quota is not None:
            lines.append(f"cgroup CPU quota: {self.cpu_quota:g} CPUs")
        lines.append(f"thread budget: {self.thread_budget} (source: {self.source})")
        return lines


# Reading the real machine -------------------------------------------------------


def _numa_map(root: str) -> dict[int, int]:
    node_dir = os.path.join(root, "sys/devices/system/node")
    mapping: dict[int, int] = {}
    try:
        entries = os.listdir(node_dir)
    except OSError:
        return mapping
    for name in entries:
        m = re.fullmatch(r"node(\d+)", name)
        text = read_text(os.path.join(node_dir, name, "cpulist")) if m else None
        if m and text:
            for cpu in parse_cpu_list(text):
                mapping[cpu] = int(m.group(1))
    return mapping


def _from_sysfs(root: str) -> Optional[list[LogicalCpu]]:
    cpu_dir = os.path.join(root, "sys/devices/system/cpu")
    online = read_text(os.path.join(cpu_dir, "online"))
    if online is None:
        return None
    numa = _numa_map(root)
    siblings_to_core: dict[tuple, int] = {}
    cpus = []
    for cpu in parse_cpu_list(online):
        topo = os.path.join(cpu_dir, f"cpu{cpu}", "topology")
        package = read_text(os.path.join(topo, "physical_package_id"))
        siblings = read_text(os.path.join(topo, "core_cpus_list")) or read_text(
            os.path.join(topo, "thread_siblings_list"))
        if package is None or siblings is None:
            return None
        key = (int(package), tuple(parse_cpu_list(siblings)))
        core = siblings_to_core.setdefault(key, len(siblings_to_core))
        cpus.append(LogicalCpu(cpu, core, max(0, int(package)), numa.get(cpu, 0)))
    return cpus or None


def _cpuinfo_records(root: str) -> list[dict[str, str]]:
    text = read_text(os.path.join(root, "proc/cpuinfo")) or ""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                records.append(current)
            current = {}
            continue
        key, _, value = line.partition(":")
        current[key.strip()] = value.strip()
    if current:
        records.append(current)
    return records


def _from_cpuinfo(records: list[dict[str, str]]) -> Optional[list[LogicalCpu]]:
    keys: dict[tuple, int] = {}
    cpus = []
    for rec in records:
        if "processor" not in rec:
            continue
        cpu = int(rec["processor"])
        socket = int(rec.get("physical id", 0))
        key = (socket, rec.get("core id", f"cpu{cpu}"))
        core = keys.setdefault(key, len(keys))
        cpus.append(LogicalCpu(cpu, core, socket, 0))
    return cpus or None


def _flags(records: list[dict[str, str]]) -> frozenset:
    for rec in records:
        if "flags" in rec:
            return frozenset(rec["flags"].split())
    return frozenset()


def read_topology(root: str = "/", affinity: Optional[Iterable[int]] = None,
                  cgroup: Optional[CgroupLimits] = None) -> Topology:
    """Describe this machine and what this process may use of it.

    ``root`` is where /sys and /proc are found (tests pass a fake tree);
    ``affinity`` defaults to ``os.sched_getaffinity(0)`` when reading the real
    root; ``cgroup`` defaults to what :func:`read_cgroup_limits` finds.
    """
    records = _cpuinfo_records(root)
    cpus, source = _from_sysfs(root), "sysfs"
    if cpus is None:
        cpus, source = _from_cpuinfo(records), "/proc/cpuinfo"
    if cpus is None:
        count = os.cpu_count() or 1
        cpus, source = [LogicalCpu(i, i, 0, 0) for i in range(count)], "os.cpu_count()"
    if affinity is None and root == "/" and hasattr(os, "sched_getaffinity"):
        # OpenMP binding narrows the main thread to its first place when torch loads; the
        # places still name what the process was given
        affinity = os.sched_getaffinity(0) | (openmp_place_cpus() or set())
    usable = {c.id for c in cpus} if affinity is None else set(affinity)
    limits = read_cgroup_limits(root) if cgroup is None else cgroup
    if limits.cpuset is not None:
        usable &= limits.cpuset
    if not usable:  # a cpuset we misread must not leave us with nothing
        usable = {c.id for c in cpus}
    flags = _flags(records)
    if root == "/":  # the real machine: what CPUID confirms, less NANO_CPU_IGNORE
        flags = effective_flags(flags, cpuid_flags(), ignored_features())
    return Topology.build(cpus, usable, limits.cpu_quota, source, flags)
