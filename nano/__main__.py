"""``python -m nano``: the demo. What Nano finds on this CPU, then optimize() on a shipped ResNet-18.

    python -m nano [--full] [--batch 1] [--out nano-out]

``--full`` also tries the torch.compile methods (each compiles for 20-50 s).
"""

import argparse
import os
import sys

from nano.launcher.environment import plan_environment, render_exports
from nano.launcher.topology import read_topology

COMPILE_METHODS = ["compile_fp32", "compile_bf16", "compile_bf16_channels_last"]


def launcher_report() -> None:
    """Print the CPU Nano sees and the environment bigdl-nano-init would set."""
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


def optimize_demo(batch: int, full: bool, out: str) -> None:
    """optimize() a ResNet-18 on this machine, print the table, save the pick and a chart."""
    import torch

    from nano import InferenceOptimizer
    from nano.models import resnet18

    print(f"\noptimize(): ResNet-18 (11.7 M parameters), batch {batch}, 224x224")
    print("==========================================================")
    model = resnet18()
    sample = torch.randn(batch, 3, 224, 224)
    held_out = torch.randn(batch, 3, 224, 224)
    opt = InferenceOptimizer()
    opt.optimize(model, [(sample,), (held_out,)], excludes=None if full else COMPILE_METHODS,
                 latency_sample_num=50, latency_budget=4)
    opt.summary()
    best, description = opt.get_best_model()
    print(f"\nfastest within tolerance: {description}")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "resnet18-best")
    InferenceOptimizer.save(best, path)
    opt.save_summary(os.path.join(out, "summary.png"))
    opt.save_summary(os.path.join(out, "summary.csv"))
    print(f"saved the pick to {path}/ and the table to {out}/summary.csv and summary.png")
    print(f"load it with:  from nano import InferenceOptimizer; "
          f"model = InferenceOptimizer.load({path!r}" +
          (", model=resnet18())" if best.needs_model_to_load else ")"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nano", description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="also try torch.compile (slow to build)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", default="nano-out", help="where to save the pick and the chart")
    p.add_argument("--report-only", action="store_true", help="only the launcher report")
    args = p.parse_args(argv)
    launcher_report()
    if not args.report_only:
        optimize_demo(args.batch, args.full, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
