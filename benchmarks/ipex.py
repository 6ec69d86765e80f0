"""IPEX against Nano's upstream methods on the same model, same threads, timed side by side
(nano.search.measure.time_side_by_side) in one run. Runs in the IPEX lane's environment
(torch 2.8 + IPEX 2.8, built by scripts/setup-ipex.sh):

    .venv-ipex/bin/python benchmarks/ipex.py [--quick] [--model resnet18|bert]

For each workload, every method of each precision is built in this process, then all are
timed together; ratios are speed-ups over eager fp32, and "IPEX / upstream" is the best
IPEX method's speed over the best upstream method's at that precision (> 1: IPEX faster).
Then optimize() runs over the same methods, and its pick (at any precision, at each, and
among PyTorch's own eager and TorchScript methods, where IPEX competes with no other
runtime) is printed next to the fastest method that kept the accuracy judgement.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

METHODS = {
    "fp32": ["original", "fp32_ipex", "jit_fp32_ipex", "jit_fp32", "onnxruntime_fp32",
             "openvino_fp32"],
    "bf16": ["bf16", "bf16_ipex", "jit_bf16_ipex", "jit_bf16", "openvino_bf16"],
    "int8": ["int8_ipex", "compile_int8", "onnxruntime_int8_qdq", "openvino_int8"],
}
THREADS = 2


def resnet18(batch: int):
    from nano.models import resnet18 as build

    torch.manual_seed(0)
    model = build().eval()
    return model, torch.randn(batch, 3, 224, 224), [(torch.randn(8, 3, 224, 224),)
                                                    for _ in range(4)]


def bert(batch: int):
    from nano.models import zoo

    model, sample = zoo.build("bert", batch)
    return model, sample, [zoo.build("bert", 8)[1] for _ in range(4)]


WORKLOADS = {"resnet18": [("ResNet-18 batch 1", resnet18, 1), ("ResNet-18 batch 16", resnet18, 16)],
             "bert": [("BERT (zoo) batch 8", bert, 8)]}


def build_all(model, sample, calib) -> dict:
    from nano.runtimes import registry as backends
    from nano.runtimes.registry import get_method
    from nano.runtimes.prepare import prepare

    args = sample if isinstance(sample, tuple) else (sample,)
    built = {}
    for precision, names in METHODS.items():
        for name in names:
            method = get_method(name)
            start = time.perf_counter()
            try:
                reason = backends.unavailable_reason(method)
                if reason:
                    raise RuntimeError(reason)
                inputs = prepare(model, args, THREADS,
                                 calib=[(c, {}) for c in calib] if precision == "int8" else None)
                built[name] = backends.build(method, inputs)
                print(f"  built {name} in {time.perf_counter() - start:.1f} s", flush=True)
            except Exception as e:
                print(f"  {name}: not built ({type(e).__name__}: {str(e)[:150]})", flush=True)
    return built


def side_by_side(built: dict, sample, rounds: int, round_seconds: float) -> dict:
    from nano.search.measure import time_side_by_side

    args = sample if isinstance(sample, tuple) else (sample,)
    fns = {name: (lambda m=m: m(*args)) for name, m in built.items()}
    with torch.no_grad():
        return time_side_by_side(fns, rounds=rounds, round_seconds=round_seconds)


def report(medians: dict) -> None:
    base = medians["original"]
    print(f"\n{'method':24} {'median ms':>10} {'vs eager':>9}")
    for name, m in sorted(medians.items(), key=lambda kv: kv[1]):
        print(f"{name:24} {m * 1e3:10.3f} {base / m:8.2f}x")
    print(f"\n{'precision':10} {'best IPEX':>26} {'best upstream':>30} {'IPEX / upstream':>16}")
    for precision, names in METHODS.items():
        timed = [n for n in names if n in medians]
        ipex = [n for n in timed if n.endswith("_ipex")]
        upstream = [n for n in timed if not n.endswith("_ipex") and n != "original"]
        if not ipex or not upstream:
            continue
        bi, bu = min(ipex, key=medians.get), min(upstream, key=medians.get)
        print(f"{precision:10} {bi:>16} {base / medians[bi]:6.2f}x {bu:>22} "
              f"{base / medians[bu]:6.2f}x {medians[bu] / medians[bi]:15.2f}x")


def pick(model, sample, calib) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    from nano import InferenceOptimizer

    names = [n for ns in METHODS.values() for n in ns]
    opt = InferenceOptimizer()
    args = sample if isinstance(sample, tuple) else (sample,)
    start = time.perf_counter()
    if len(args) == 1:
        data = DataLoader(TensorDataset(torch.cat([c[0] for c in calib])), batch_size=len(args[0]))
    else:
        data = [c for c in calib]
    opt.optimize(model, data, input_sample=args if len(args) > 1 else args[0],
                 includes=names, thread_num=THREADS, latency_sample_num=20,
                 accuracy="rel_l2" if len(args) == 1 else None, search_mode="all")
    ok = [r for r in opt.results if r.status == "ok" and r.latency]
    print(f"\noptimize() over these methods ({time.perf_counter() - start:.0f} s):")
    for precision in [None, *METHODS]:
        rows = [r for r in ok if precision is None or r.method.precision == precision]
        if not rows:
            continue
        best, _ = opt.get_best_model(precision=precision)
        fastest = min(rows, key=lambda r: r.extra.get("side_by_side", r.latency.median))
        print(f"  {precision or 'any':5} picks {best.method.name:22} the fastest that passed: "
              f"{fastest.name}")
    # among PyTorch's own methods (eager, TorchScript), where IPEX competes with no runtime
    torch_rows = [r for r in ok if r.method.accelerator in ("pytorch", "jit")]
    best, _ = opt.get_best_model(accelerator=("pytorch", "jit"))
    fastest = min(torch_rows, key=lambda r: r.extra.get("side_by_side", r.latency.median))
    print(f"  PyTorch's own methods: picks {best.method.name}; the fastest that passed: "
          f"{fastest.name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=list(WORKLOADS), action="append")
    parser.add_argument("--quick", action="store_true", help="short timing rounds")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    print(f"torch {torch.__version__}, {THREADS} threads")
    for key in args.model or list(WORKLOADS):
        for title, make, batch in WORKLOADS[key]:
            print(f"\n== {title} ==", flush=True)
            model, sample, calib = make(batch)
            built = build_all(model, sample, calib)
            report(side_by_side(built, sample, args.rounds, 0.05 if args.quick else 0.2))
            pick(model, sample, calib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
