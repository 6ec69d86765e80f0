"""Throughput: N pinned single-core instances vs one instance with all cores, batch 1.

For ResNet-18 and all-MiniLM-L6-v2 (when installed), optimize() picks the best
runtimes (torch.compile excluded: slow to build), then each of the top three
is served both ways in this run. Ratio = N-instance calls/s / 1-instance
calls/s; the target on the 2-core reference machine is >= 1.3x for the best
runtime of each model.

For the best runtime it also measures what the hardware allows without any
pool: N independent processes, each pinned to one core and calling the model
in a loop, against one process with every core ("no-pool bound"). That bound
is 2 / (how much faster the runtime gets from a second thread), so a runtime
that scales well to all cores cannot gain much from splitting them.

    python benchmarks/multi_instance.py [--calls 200] [--top 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

EXCLUDE = ["compile_fp32", "compile_bf16", "compile_bf16_channels_last", "compile_int8"]


def loop_rate(model_dir: str, sample_file: str, cpus: list, seconds: float) -> float:
    """Run in a child: pin to ``cpus``, load the saved model, call it for ``seconds``."""
    from nano.multiprocess.instance_server import load

    os.sched_setaffinity(0, cpus)
    model = load(model_dir, len(cpus))
    args, kwargs = torch.load(sample_file)
    with torch.no_grad():
        for _ in range(5):
            model(*args, **kwargs)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model(*args, **kwargs)
            count += 1
    return count / (time.perf_counter() - start)


def no_pool_bound(model, sample, instances: int, seconds: float, rounds: int = 3):
    """(one process on every core, ``instances`` independent single-core processes) in
    calls/s, medians over alternating rounds."""
    import statistics

    from nano.multiprocess.pool import cpu_sets, save_for_workers

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        os.makedirs(model_dir)
        save_for_workers(model, model_dir)
        sample_file = os.path.join(tmp, "sample.pt")
        torch.save(sample, sample_file)

        def together(sets):
            procs = [subprocess.Popen(
                [sys.executable, __file__, "--loop", json.dumps([model_dir, sample_file, s,
                                                                seconds])],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for s in sets]
            return sum(float(p.communicate()[0].split()[-1]) for p in procs)

        everything = sorted(os.sched_getaffinity(0))
        singles, multis = [], []
        for _ in range(rounds):
            singles.append(together([everything]))
            multis.append(together(cpu_sets(instances, 1)))
    return statistics.median(singles), statistics.median(multis)


def run(name, model, training, validation, metric, calls, top, criterion, seconds):
    from nano import InferenceOptimizer

    print(f"\n== {name}, batch 1 ==", flush=True)
    opt = InferenceOptimizer()
    opt.optimize(model, training, validation_data=validation, metric=metric, excludes=EXCLUDE,
                 latency_sample_num=50, latency_budget=3)
    rows = opt.measure_throughput(top=top, calls=calls, accuracy_criterion=criterion)
    n = opt.thread_num
    print(f"{'method':28} {'1 x ' + str(n) + ' cores/s':>14} {str(n) + ' x 1 core/s':>13} "
          f"{'ratio':>6}")
    for method, single, multi in rows:
        print(f"{method:28} {single:14.1f} {multi:13.1f} {multi / single:6.2f}x")
    best = rows[0]
    print(f"best runtime {best[0]}: {n} instances give {best[2] / best[1]:.2f}x the throughput of "
          f"one (target >= 1.3x)")
    single, multi = no_pool_bound(opt.get_model(best[0]), (training[0], {}), n, seconds)
    print(f"no-pool bound for {best[0]}: 1 x {n} cores {single:.1f}/s, {n} independent x 1 core "
          f"{multi:.1f}/s = {multi / single:.2f}x; the pool reaches "
          f"{(best[2] / best[1]) / (multi / single):.0%} of it")
    return (*best, multi / single)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--top", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5, help="length of each no-pool loop")
    p.add_argument("--loop", help=argparse.SUPPRESS)  # internal: one no-pool loop process
    args = p.parse_args()
    if args.loop:
        model_dir, sample_file, cpus, seconds = json.loads(args.loop)
        print(loop_rate(model_dir, sample_file, cpus, seconds))
        return 0
    from nano.models import resnet18
    from nano.models.minilm import unavailable_reason

    results = {}
    torch.manual_seed(0)
    images = [(torch.randn(1, 3, 224, 224),) for _ in range(4)]
    results["ResNet-18"] = run("ResNet-18", resnet18(), images, None, None, args.calls, args.top,
                               None, args.seconds)
    if unavailable_reason():
        print(f"\nMiniLM skipped: {unavailable_reason()}")
    else:
        from nano.models.minilm import SENTENCES, load_minilm

        tokenizer, model = load_minilm()

        def encode(s):
            t = tokenizer(s, padding="max_length", truncation=True, max_length=32,
                          return_tensors="pt")
            return t["input_ids"], t["attention_mask"]

        training = [encode(SENTENCES[i:i + 1]) for i in range(8)]
        with torch.no_grad():
            validation = [(*encode(SENTENCES[i:i + 8]), model(*encode(SENTENCES[i:i + 8])))
                          for i in (32, 40)]

        def cosine(pred, ref):
            return torch.nn.functional.cosine_similarity(pred.float(), ref, dim=-1).min().item()

        results["MiniLM"] = run("all-MiniLM-L6-v2", model, training, validation, cosine,
                                args.calls, args.top, 0.01, args.seconds)
    print("\n== summary ==")
    print(f"{'model':10} {'best runtime':28} {'pool':>6} {'no-pool bound':>14}")
    for name, (method, single, multi, bound) in results.items():
        print(f"{name:10} {method:28} {multi / single:5.2f}x {bound:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
