"""``python -m nano``: the main demo (for now, the launcher report of this machine)."""

import os
import sys

from nano.launcher.environment import plan_environment, render_exports
from nano.launcher.topology import read_topology


def main() -> int:
    """Print what Nano finds on this CPU and the environment it would set."""
    topology = read_topology()
    print("Nano launcher report")
    print("====================")
    for line in topology.describe():
        print("  " + line)
    print(f"  bf16 instructions: {'yes' if topology.has_bf16 else 'no'}")
    plan = plan_environment(topology, os.environ)
    print(f"  allocator: {plan.allocator or 'glibc malloc (no faster allocator found)'}")
    for warning in plan.warnings:
        print(f"  warning: {warning}")
    print("\nEnvironment bigdl-nano-init would set (eval \"$(bigdl-nano-init)\"):")
    sys.stdout.write(render_exports(plan, explain=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
