"""Time to a pick: optimize() of ResNet-18 (batch 1, 224x224) as it ran before this work
(no build cache), then with the build cache empty and again with it filled, in one run.

Every run tries the same candidates and must make the same pick (the pick is also timed
side by side against eager in each run). Targets on the reference machine: a second
optimize() of the same model <= 15 s; the full first run <= 45 s (#15; not met yet: the
first run's cost is mostly torch.compile and the INT8 builds).

    python benchmarks/time_to_pick.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch
from torch.utils.data import DataLoader, TensorDataset


def run(model, data, excludes, **kwargs) -> tuple[float, str, int]:
    from nano import InferenceOptimizer

    opt = InferenceOptimizer()
    start = time.perf_counter()
    opt.optimize(model, data, excludes=excludes, latency_sample_num=50, **kwargs)
    seconds = time.perf_counter() - start
    best, _ = opt.get_best_model()
    reused = sum("build cache" in r.detail for r in opt.results)
    return seconds, best.method.name, reused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64x64 inputs, no compile_*")
    args = parser.parse_args()
    from nano.models import resnet18

    size = 64 if args.quick else 224
    torch.manual_seed(0)
    model = resnet18().eval()
    data = DataLoader(TensorDataset(torch.randn(32, 3, size, size)), batch_size=1)
    excludes = ["compile_fp32", "compile_bf16", "compile_bf16_channels_last"] if args.quick \
        else None
    with tempfile.TemporaryDirectory(prefix="nano-bench-cache-") as cache:
        rows = [("before (no cache)",) + run(model, data, excludes, no_cache=True),
                ("cache empty",) + run(model, data, excludes, cache_dir=cache),
                ("cache filled",) + run(model, data, excludes, cache_dir=cache)]
    base = rows[0][1]
    print(f"\nResNet-18, batch 1, {size}x{size}")
    print(f"{'run':20} {'seconds':>8} {'vs before':>10} {'reused':>7}  pick")
    for name, seconds, pick, reused in rows:
        print(f"{name:20} {seconds:8.1f} {base / seconds:9.2f}x {reused:7d}  {pick}")
    picks = {pick for _, _, pick, _ in rows}
    print("same pick in every run" if len(picks) == 1 else f"picks differ: {sorted(picks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
