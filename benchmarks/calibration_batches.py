"""How many calibration batches INT8 needs: accuracy and quantization time per count.

For the digits CNN (trained here; accuracy on 397 held-out images) and a
ResNet-18 at 64x64 (output error against fp32 on held-out inputs), each INT8
runtime is quantized with 1, 4, 16 and 64 calibration batches of 8 samples.
Times are relative to the 16-batch run of the same runtime, measured in this
run. optimize() and quantize() share one limit, ``CALIBRATION_BATCHES``.

    python benchmarks/calibration_batches.py
"""

from __future__ import annotations

import sys
import time

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))

COUNTS = (1, 4, 16, 64)
RUNTIMES = [(None, None), ("onnxruntime", "qdq"), ("openvino", None)]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


def sweep(title, model, batches, score, what):
    from nano import InferenceOptimizer

    print(f"\n== {title} ==")
    print(f"{'runtime':24} {'batches':>7} {what:>12} {'time vs 16':>10}")
    for accelerator, method in RUNTIMES:
        seconds = {}
        rows = []
        for n in COUNTS:
            start = time.perf_counter()
            q = InferenceOptimizer.quantize(model, accelerator=accelerator, method=method,
                                            calib_data=batches[:n])
            seconds[n] = time.perf_counter() - start
            rows.append((q.method.name, n, score(q)))
        for name, n, value in rows:
            print(f"{name:24} {n:7d} {value:12.4f} {seconds[n] / seconds[16]:9.2f}x")


def main() -> int:
    from inference import digits_cnn

    from nano.models.resnet import resnet18

    model, x, y, tx, ty = digits_cnn()
    with torch.no_grad():
        base = (model(tx).argmax(-1) == ty).float().mean().item()
    print(f"digits fp32 accuracy {base:.4f}")
    sweep("digits CNN: accuracy drop", model,
          [(x[i:i + 8], y[i:i + 8]) for i in range(0, 8 * max(COUNTS), 8)],
          lambda q: base - (q(tx).argmax(-1) == ty).float().mean().item(), "drop")

    torch.manual_seed(0)
    net = resnet18().eval()
    images = torch.randn(8 * max(COUNTS) + 32, 3, 64, 64)
    held_out = images[-32:]
    with torch.no_grad():
        want = net(held_out)
    sweep("ResNet-18 64x64: output error vs fp32 (relative L2)", net,
          [(images[i:i + 8],) for i in range(0, 8 * max(COUNTS), 8)],
          lambda q: relative_error(q(held_out), want), "error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
