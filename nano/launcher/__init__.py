"""CPU topology, core scheduling, environment tuning and pinned launching.

The pieces are pure functions over a :class:`Topology` value so they can be
tested against any machine description; the commands ``bigdl-nano-init``,
``bigdl-nano-unset-env`` and ``bigdl-nano-run`` are thin shells around them.

Imports only ``nano.errors`` and ``nano.noise``; every other package may import it.
"""

from nano.launcher.environment import EnvPlan, plan_environment, plan_restore
from nano.launcher.schedule import SchedulingError, schedule_instances
from nano.launcher.topology import LogicalCpu, Topology, read_topology

__all__ = ["EnvPlan", "LogicalCpu", "SchedulingError", "Topology", "plan_environment",
           "plan_restore", "read_topology", "schedule_instances"]
