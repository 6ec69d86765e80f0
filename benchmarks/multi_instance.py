"""Throughput: N pinned single-core instances vs one instance with all cores, batch 1.

For ResNet-18 and all-MiniLM-L6-v2 (when installed), optimize() picks the best
runtimes (torch.compile excluded: slow to build), then each of the top three
is served both ways in this run. Ratio = N-instance calls/s / 1-instance
calls/s; the target on the 2-core reference machine is >= 1.3x for the best
runtime of each model.

    python benchmarks/multi_instance.py [--calls 200] [--top 3]
"""

from __future__ import annotations

import argparse
import sys

import torch

EXCLUDE = ["compile_fp32", "compile_bf16", "compile_bf16_channels_last", "compile_int8"]


def run(name, model, training, validation, metric, calls, top, criterion):
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
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--top", type=int, default=3)
    args = p.parse_args()
    from nano.models import resnet18
    from nano.models.minilm import unavailable_reason

    results = {}
    torch.manual_seed(0)
    images = [(torch.randn(1, 3, 224, 224),) for _ in range(4)]
    results["ResNet-18"] = run("ResNet-18", resnet18(), images, None, None, args.calls, args.top,
                               None)
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
                                args.calls, args.top, 0.01)
    print("\n== summary ==")
    for name, (method, single, multi) in results.items():
        print(f"{name:10} {method:28} {multi / single:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
