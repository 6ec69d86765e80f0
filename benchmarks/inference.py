"""The optimize() pick against eager PyTorch and against each runtime driven by hand.

For each workload (ResNet-18 at batch 1 and 16, a MiniLM-sized encoder at
batch 1) this runs optimize() over the fp32/bf16 methods, then times, side by
side in this process (nano.search.measure.time_side_by_side: shuffled
rounds, median of round medians) with the same threads:

- eager fp32 (the baseline),
- the pick (get_best_model()),
- a plain ONNX Runtime session on the same exported graph,
- a plain OpenVINO compile_model at its default precision and with f32 pinned,
- Nano's wrappers around those same ORT/OpenVINO objects (wrapper overhead).

The INT8 part (ResNet-18, batch 1 and 16) runs optimize(precision="int8")
against eager fp32 and against ONNX Runtime static QDQ and OpenVINO+NNCF
quantized by hand with the same calibration batches and threads, then checks
the accuracy drop of each INT8 runtime on a CNN trained on scikit-learn's
digits.

Ratios are speed-ups over eager (baseline time / time). Targets on the
reference machine: fp32/bf16 pick >= 0.97x the best hand-driven runtime and
wrapper overhead < 3% at batch 1; INT8 pick >= 0.97x the best hand-driven
INT8 and >= 5x eager at batch 1; <= 1% accuracy drop on digits.

    python benchmarks/inference.py [--quick] [--rounds 10] [--only fp32|int8]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from nano.search.measure import time_side_by_side


def round_seconds(args) -> float:
    """How long each contender is timed per round."""
    return 0.05 if args.quick else 0.2


def print_medians(medians: dict) -> float:
    """Print each contender's median and its speed-up over eager; return eager's median."""
    base = medians["eager fp32"]
    print(f"\n{'contender':40} {'median ms':>10} {'vs eager':>9}")
    for name, m in medians.items():
        print(f"{name:40} {m * 1e3:10.3f} {base / m:8.2f}x")
    return base


def workload(name, model, args, threads, rounds, round_seconds, quick, excludes):
    from nano import InferenceOptimizer
    from nano.optimizer import build_method
    from nano.runtimes.registry import get_method

    print(f"\n== {name} ==", flush=True)
    opt = InferenceOptimizer()
    start = time.time()
    # fp32/bf16 only: the INT8 part below compares INT8 with hand-quantized runtimes
    opt.optimize(model, args if len(args) > 1 else args[0], thread_num=threads,
                 latency_sample_num=50 if quick else 100, latency_budget=3 if quick else 8,
                 excludes=excludes, precision=("fp32", "bf16", "fp16"),
                 accuracy="rel_l2")  # random weights and inputs: no classes to agree on
    search_s = time.time() - start
    opt.summary()
    pick, desc = opt.get_best_model()
    print(f"pick: {desc} (search took {search_s:.0f} s)")

    from nano.runtimes.baselines import hand_onnxruntime, hand_openvino

    nano_ort = build_method(model, get_method("onnxruntime_fp32"), tuple(args), threads)
    nano_ov = build_method(model, get_method("openvino_fp32"), tuple(args), threads)
    eager = model.eval()
    torch.set_num_threads(threads)

    def run_eager():
        with torch.no_grad():
            eager(*args)

    contenders = {
        "eager fp32": run_eager,
        f"nano pick ({pick.method.name})": lambda: pick(*args),
        "hand ORT fp32 session": hand_onnxruntime(model, tuple(args), threads),
        "nano onnxruntime_fp32": lambda: nano_ort(*args),
        "hand OpenVINO default precision": hand_openvino(model, tuple(args), threads),
        "hand OpenVINO f32 pinned": hand_openvino(model, tuple(args), threads, "f32"),
        "nano openvino_fp32": lambda: nano_ov(*args),
    }
    medians = time_side_by_side(contenders, rounds, round_seconds)
    base = print_medians(medians)
    pick_t = medians[f"nano pick ({pick.method.name})"]
    hand_best = min(medians["hand ORT fp32 session"], medians["hand OpenVINO default precision"],
                    medians["hand OpenVINO f32 pinned"])
    print(f"pick vs best hand-driven runtime: {hand_best / pick_t:.3f} (target >= 0.97)")
    print(f"wrapper overhead ORT: {medians['nano onnxruntime_fp32'] / medians['hand ORT fp32 session'] - 1:+.1%}, "
          f"OpenVINO f32: {medians['nano openvino_fp32'] / medians['hand OpenVINO f32 pinned'] - 1:+.1%}")
    return {"pick": pick.method.name, "pick_vs_eager": base / pick_t,
            "pick_vs_hand": hand_best / pick_t}


def hand_int8(model, args, threads, calib, tmp):
    """ONNX Runtime static QDQ and OpenVINO + NNCF, quantized by hand like their docs suggest."""
    import os

    import nncf
    import onnxruntime as ort
    import openvino as ov
    from onnxruntime.quantization import (QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    fp32, pre, int8 = (os.path.join(tmp, f) for f in ("hand.onnx", "hand_pre.onnx", "hand8.onnx"))
    with torch.no_grad():
        torch.onnx.export(model, tuple(args), fp32, input_names=["x"], dynamo=False)
    quant_pre_process(fp32, pre)

    class Reader:
        def __init__(self):
            self.it = iter([{"x": c.numpy()} for c in calib])

        def get_next(self):
            return next(self.it, None)

    quantize_static(pre, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(int8, opts, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ov_model = ov.convert_model(model, example_input=tuple(args))
    q = nncf.quantize(ov_model, nncf.Dataset([c.numpy() for c in calib]),
                      subset_size=len(calib))
    compiled = ov.Core().compile_model(q, "CPU", {"INFERENCE_NUM_THREADS": str(threads)})
    x = args[0].numpy()
    return {"hand ORT INT8 (QDQ, per-channel)": lambda: sess.run(None, {"x": x}),
            "hand OpenVINO INT8 (NNCF)": lambda: compiled(x)}


def int8_workload(batch, threads, rounds, round_seconds):
    """optimize(precision='int8') on ResNet-18 vs eager and hand-quantized runtimes."""
    import tempfile

    from nano import InferenceOptimizer
    from nano.models import resnet18

    print(f"\n== INT8: ResNet-18, batch {batch}, 224x224, {threads} threads ==", flush=True)
    model = resnet18()
    torch.manual_seed(1)
    calib = [torch.randn(batch, 3, 224, 224) for _ in range(8)]
    x = torch.randn(batch, 3, 224, 224)
    opt = InferenceOptimizer()
    start = time.time()
    opt.optimize(model, [(x,)] + [(c,) for c in calib], precision="int8", thread_num=threads,
                 latency_sample_num=60, latency_budget=5, accuracy="rel_l2")
    opt.summary()
    pick, desc = opt.get_best_model(precision="int8")
    print(f"pick: {desc} (search took {time.time() - start:.0f} s)")
    contenders = hand_int8(model, [x], threads, calib, tempfile.mkdtemp())

    def run_eager():
        with torch.no_grad():
            model(x)

    contenders = {"eager fp32": run_eager, f"nano pick ({pick.method.name})": lambda: pick(x),
                  **contenders}
    torch.set_num_threads(threads)
    medians = time_side_by_side(contenders, rounds, round_seconds)
    base = print_medians(medians)
    pick_t = medians[f"nano pick ({pick.method.name})"]
    hand_best = min(v for k, v in medians.items() if k.startswith("hand"))
    print(f"INT8 pick vs best hand-driven INT8: {hand_best / pick_t:.3f} (target >= 0.97); "
          f"vs eager {base / pick_t:.2f}x (target >= 5x at batch 1)")
    return {"pick": pick.method.name, "pick_vs_eager": base / pick_t,
            "pick_vs_hand": hand_best / pick_t}


def digits_cnn():
    """A small CNN trained here on scikit-learn's digits: (model, x, y, test x, test y)."""
    from sklearn.datasets import load_digits
    from torch import nn

    data = load_digits()
    xs = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    ys = torch.tensor(data.target)
    order = torch.randperm(len(ys), generator=torch.Generator().manual_seed(0))
    xs, ys = xs[order], ys[order]
    (x, y), (tx, ty) = (xs[:1400], ys[:1400]), (xs[1400:], ys[1400:])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(32 * 16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(8):
        for i in range(0, len(y), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
            opt.step()
    return model.eval(), x, y, tx, ty


def digits_accuracy():
    """Each INT8 runtime's accuracy drop on a small CNN trained on scikit-learn's digits."""
    from nano import InferenceOptimizer

    print("\n== INT8 accuracy on digits (CNN trained here, 397 held-out images) ==", flush=True)
    model, x, y, tx, ty = digits_cnn()

    def acc(pred, target):
        return (pred.argmax(-1) == target).float().mean().item()

    with torch.no_grad():
        base = acc(model(tx), ty)
    calib = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    print(f"{'runtime':28} {'accuracy':>9} {'drop':>7}")
    print(f"{'fp32 original':28} {base:9.4f} {0:7.4f}")
    worst = 0.0
    for accelerator, method in [(None, None), ("onnxruntime", "qdq"), ("onnxruntime", "qlinear"),
                                ("openvino", None)]:
        q = InferenceOptimizer.quantize(model, accelerator=accelerator, method=method,
                                        calib_data=calib)
        a = acc(q(tx), ty)
        worst = max(worst, base - a)
        print(f"{q.method.name:28} {a:9.4f} {base - a:7.4f}")
    print(f"largest drop: {worst:.4f} (target <= 0.01)")
    return worst


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="skip torch.compile candidates (slow "
                   "to build) and time fewer calls")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", choices=["fp32", "int8"], help="run one part only")
    args = p.parse_args()
    from nano.launcher.topology import read_topology

    threads = args.threads or read_topology().thread_budget
    excludes = ["compile_fp32", "compile_bf16", "compile_bf16_channels_last"] if args.quick else None
    summary = {}
    if args.only != "int8":
        fp32_part(args, threads, excludes, summary)
    if args.only != "fp32":
        for batch in (1, 16):
            summary[f"INT8 ResNet-18 batch {batch}"] = int8_workload(
                batch, threads, args.rounds, round_seconds(args))
        drop = digits_accuracy()
    print("\n== summary ==")
    for name, s in summary.items():
        print(f"{name:26} pick {s['pick']:28} {s['pick_vs_eager']:.2f}x eager, "
              f"{s['pick_vs_hand']:.3f} of best hand-driven")
    if args.only != "fp32":
        print(f"digits INT8 largest accuracy drop: {drop:.4f}")
    return 0


def fp32_part(args, threads, excludes, summary):
    """The fp32/bf16 workloads."""
    from nano.models import TinyEncoder, resnet18

    resnet = resnet18()
    for batch in (1, 16):
        summary[f"ResNet-18 batch {batch}"] = workload(
            f"ResNet-18, batch {batch}, 224x224, {threads} threads", resnet,
            [torch.randn(batch, 3, 224, 224)], threads, args.rounds, round_seconds(args),
            args.quick, excludes)
    torch.manual_seed(0)
    encoder = TinyEncoder(vocab=30522, dim=384, heads=12, layers=6, max_len=128).eval()
    ids = torch.randint(0, 30522, (1, 128))
    mask = torch.ones(1, 128, dtype=torch.long)
    summary["encoder batch 1"] = workload(
        f"MiniLM-sized encoder (6 layers, dim 384), batch 1, seq 128, {threads} threads", encoder,
        [ids, mask], threads, args.rounds, round_seconds(args), args.quick, excludes)


if __name__ == "__main__":
    sys.exit(main())
