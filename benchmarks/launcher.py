"""Does the tuned environment help? CNN inference and training, with and without it, side by side.

Each configuration runs the same workload in a fresh process (an allocator can
only be chosen at process start); rounds are interleaved so machine noise hits
every configuration alike. Prints the median time per configuration and its
ratio to the untuned baseline (ratio > 1 means faster than the baseline).

    python benchmarks/launcher.py [--rounds 3] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = {
    "untuned (glibc, no OpenMP settings)": None,
    "tuned, glibc malloc": "default",
    "tuned, tcmalloc": "tcmalloc",
    "tuned, jemalloc": "jemalloc",
}
TUNING_VARS = ("OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY", "KMP_BLOCKTIME",
               "LD_PRELOAD", "MALLOC_CONF", "NANO_SAVED_ENV", "GLIBC_TUNABLES",
               "THP_MEM_ALLOC_ENABLE", "TBB_ENABLE_SANITIZERS")


def child(batch: int, iters: int) -> None:
    """Time inference and training steps of a ResNet-18 in this process; print JSON."""
    import torch

    from nano.models import resnet18

    model = resnet18(num_classes=10)
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        t = time.perf_counter()
        for _ in range(iters):
            model(x)
        infer = (time.perf_counter() - t) / iters
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    y = torch.randint(0, 10, (batch,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(max(2, iters // 2)):
        step()
    train = (time.perf_counter() - t) / max(2, iters // 2)
    print(json.dumps({"infer": infer, "train": train}))


def env_for(allocator):
    """The child's environment: untouched-but-clean for the baseline, else bigdl-nano-init's plan."""
    from nano.launcher.environment import apply_plan, plan_environment
    from nano.launcher.topology import read_topology

    base = {k: v for k, v in os.environ.items() if k not in TUNING_VARS}
    if allocator is None:
        return base
    plan = plan_environment(read_topology(), base, allocator=allocator)
    if allocator != "default" and not plan.allocator:
        return None  # library missing: skip this row
    return apply_plan(plan, base)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.batch, args.iters)
        return 0
    envs = {name: env_for(alloc) for name, alloc in CONFIGS.items()}
    results = {name: {"infer": [], "train": []} for name in CONFIGS}
    for r in range(args.rounds):
        for name, env in envs.items():
            if env is None:
                continue
            out = subprocess.run([sys.executable, __file__, "--child", "--batch", str(args.batch),
                                  "--iters", str(args.iters)], env=env, capture_output=True,
                                 text=True, check=True)
            data = json.loads(out.stdout.strip().splitlines()[-1])
            for k in ("infer", "train"):
                results[name][k].append(data[k])
            print(f"round {r + 1}/{args.rounds} {name}: infer {data['infer'] * 1e3:.1f} ms, "
                  f"train {data['train'] * 1e3:.1f} ms", file=sys.stderr)
    base = results[next(iter(CONFIGS))]
    b_inf, b_tr = statistics.median(base["infer"]), statistics.median(base["train"])
    print(f"\nResNet-18, batch {args.batch}, {args.rounds} interleaved rounds, "
          f"median per configuration (ratio = baseline time / time)\n")
    print(f"{'configuration':40} {'infer ms':>9} {'ratio':>6} {'train ms':>9} {'ratio':>6}")
    for name, res in results.items():
        if not res["infer"]:
            print(f"{name:40} {'skipped: library not installed':>32}")
            continue
        inf, tr = statistics.median(res["infer"]), statistics.median(res["train"])
        print(f"{name:40} {inf * 1e3:9.1f} {b_inf / inf:6.2f} {tr * 1e3:9.1f} {b_tr / tr:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
