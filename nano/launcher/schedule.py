"""Split a machine's physical cores between N worker instances.

A pure function of a :class:`Topology`: one logical CPU per physical core
(SMT siblings are left idle, as they slow dense math), whole instances kept on
one socket whenever the counts allow it.
"""

from __future__ import annotations

from typing import Iterable, Optional

from nano.errors import NanoError
from nano.launcher.topology import Topology


class SchedulingError(NanoError, ValueError):
    """The requested split cannot be made; the message says what to change."""


CLI_OPTION_NAMES = {"noun": "instances", "instances": "--ninstances",
                    "cores": "--cores-per-instance", "oversubscribe": "--allow-oversubscribe"}


def schedule_instances(topology: Topology, ninstances: int,
                       cores_per_instance: Optional[int] = None,
                       nodes: Optional[Iterable[int]] = None,
                       allow_oversubscribe: bool = False,
                       option_names: Optional[dict] = None) -> list[list[int]]:
    """Return, for each instance, the sorted logical CPU ids it is pinned to.

    ``cores_per_instance`` defaults to an even split of the usable physical
    cores. ``nodes`` restricts the cores to those NUMA nodes. More instances
    than cores is refused unless ``allow_oversubscribe``, in which case the
    instances share cores round-robin, one core each. Errors name the options
    as ``option_names`` says (default: bigdl-nano-run's flags).
    """
    names = {**CLI_OPTION_NAMES, **(option_names or {})}
    if ninstances < 1:
        raise SchedulingError(f"the number of instances must be at least 1, got {ninstances}")
    if cores_per_instance is not None and cores_per_instance < 1:
        raise SchedulingError(f"cores per instance must be at least 1, got {cores_per_instance}")
    cores = topology.usable_cores(nodes)
    if not cores:
        raise SchedulingError(f"no usable cores on NUMA node(s) {sorted(set(nodes or []))}; "
                              f"this machine has nodes {topology.nodes}")
    total = len(cores)
    if cores_per_instance is None:
        if ninstances > total:
            if not allow_oversubscribe:
                raise SchedulingError(
                    f"{ninstances} {names['noun']} but only {total} usable physical cores; use "
                    f"at most {total}, or pass {names['oversubscribe']} to share cores")
            return [[cores[i % total].id] for i in range(ninstances)]
        cores_per_instance = total // ninstances
    needed = ninstances * cores_per_instance
    if needed > total:
        if not allow_oversubscribe:
            raise SchedulingError(
                f"{ninstances} {names['noun']} x {cores_per_instance} cores = {needed} cores, but "
                f"only {total} usable physical cores; lower {names['instances']} or "
                f"{names['cores']}, or pass {names['oversubscribe']}")
        return [[cores[(i * cores_per_instance + j) % total].id for j in range(cores_per_instance)]
                for i in range(ninstances)]
    return _pack_by_socket([c.id for c in cores], [c.socket for c in cores], ninstances,
                           cores_per_instance)


def _pack_by_socket(cpu_ids: list[int], sockets: list[int], ninstances: int,
                    width: int) -> list[list[int]]:
    """Fill each socket with whole instances first; instances that fit nowhere take leftovers."""
    per_socket: dict[int, list[int]] = {}
    for cpu, socket in zip(cpu_ids, sockets):
        per_socket.setdefault(socket, []).append(cpu)
    placed: list[list[int]] = []
    leftovers: list[int] = []
    for socket in sorted(per_socket):
        free = per_socket[socket]
        while len(free) >= width and len(placed) < ninstances:
            placed.append(free[:width])
            free = free[width:]
        leftovers.extend(free)
    while len(placed) < ninstances:
        placed.append(leftovers[:width])
        leftovers = leftovers[width:]
    return [sorted(p) for p in placed]
