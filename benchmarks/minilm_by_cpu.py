"""The MiniLM demo's pick against each runtime configured by hand, in one run, on this CPU.

Issue #24 asks that on every processor class the demo's pick (`python -m nano`: the fastest
method whose held-out embeddings all keep cosine >= 0.99) is within 5% of the fastest
by-hand configuration that keeps them too. This runs the demo's optimize(), then builds
what a user would write by hand for each runtime, as the processor allows (what
``nano.launcher.capability`` reports decides bf16 and the 7-bit INT8 scheme, as it does
for Nano):

- eager fp32, and eager bf16 autocast where bf16 is native;
- ONNX Runtime: the fp32 session, and dynamic INT8 (per channel; 7-bit weights without an
  int8 dot product);
- OpenVINO: f32 pinned, bf16 where native, and NNCF INT8 with the TRANSFORMER model type
  (overflow fix without an int8 dot product);
- torchao int8 dynamic activations x int8 weights, compiled, where the CPU has an int8 dot
  product (it saturates elsewhere);

judges each on the held-out sentences, and times all of them and the pick side by side
(shuffled rounds, median of round medians) with the same threads. Prints the time to pick
(build cache off: a first run) and "pick / best by hand" (target >= 0.95; > 1 means the
pick is faster).

    python benchmarks/minilm_by_cpu.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import torch

KEEP = 0.99  # the demo's cosine


def _onnx(model, args, path):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, path, dynamo=True, external_data=False, verbose=False,
                          input_names=["input_ids", "attention_mask"])


def _ort(path, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return lambda ids, mask: torch.from_numpy(sess.run(None, dict(zip(
        names, (ids.numpy(), mask.numpy()))))[0])


def _openvino(ov_model, threads, precision):
    import openvino as ov

    compiled = ov.Core().compile_model(ov_model, "CPU", {
        "INFERENCE_NUM_THREADS": str(threads), "INFERENCE_PRECISION_HINT": precision,
        "PERFORMANCE_HINT": "LATENCY"})
    return lambda ids, mask: torch.from_numpy(compiled([ids.numpy(), mask.numpy()])[0])


def by_hand(model, training, args, threads, capability, tmp):
    """{name: fn(ids, mask) -> embeddings} for the configurations a user would write."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                       OverflowFix)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hand = {"eager fp32": lambda ids, mask: model(ids, mask)}
    if capability.native("bf16"):
        def bf16(ids, mask):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(ids, mask).float()
        hand["eager bf16 autocast"] = bf16
    fp32 = os.path.join(tmp, "fp32.onnx")
    _onnx(model, args, fp32)
    hand["ORT fp32"] = _ort(fp32, threads)
    int8 = os.path.join(tmp, "int8.onnx")
    quantize_dynamic(fp32, int8, per_channel=True, weight_type=QuantType.QInt8,
                     reduce_range=capability.int8_saturates)
    hand["ORT dynamic INT8"] = _ort(int8, threads)
    with torch.no_grad():
        ov_model = ov.convert_model(model, example_input=args)
    hand["OpenVINO f32"] = _openvino(ov_model, threads, "f32")
    if capability.native("bf16"):
        hand["OpenVINO bf16"] = _openvino(ov_model, threads, "bf16")
    extra = ({"advanced_parameters": AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.ENABLE)} if capability.int8_saturates else {})
    quantized = nncf.quantize(ov_model, nncf.Dataset([[i.numpy(), m.numpy()]
                                                     for i, m in training]),
                              model_type=nncf.ModelType.TRANSFORMER,
                              preset=nncf.QuantizationPreset.MIXED, **extra)
    hand["OpenVINO INT8 (NNCF)"] = _openvino(quantized, threads, "f32")
    if not capability.int8_saturates:
        import copy

        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        tao = copy.deepcopy(model)
        quantize_(tao, Int8DynamicActivationInt8WeightConfig(),
                  filter_fn=lambda m, _: type(m) is torch.nn.Linear)
        compiled = torch.compile(tao)
        hand["torchao INT8 + compile"] = lambda ids, mask: compiled(ids, mask)
    return hand


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    from nano import InferenceOptimizer
    from nano.demo import COMPILE_METHODS, minilm_search
    from nano.search.measure import time_side_by_side
    from nano.launcher.capability import current
    from nano.launcher.topology import read_topology
    from nano.models.minilm import unavailable_reason

    if unavailable_reason():
        print(f"needs the MiniLM weights: {unavailable_reason()}", file=sys.stderr)
        return 2
    capability = current()
    threads = read_topology().thread_budget
    print(f"CPU: {'; '.join(capability.describe()[:3])}; {threads} threads")
    model, training, validation, cosine = minilm_search(8)
    started = time.time()
    opt = InferenceOptimizer()
    # no_cache: the time to pick of a first run (a user's second run reuses the builds)
    opt.optimize(model, training, validation_data=validation, metric=cosine,
                 excludes=COMPILE_METHODS, latency_sample_num=50, latency_budget=4,
                 no_cache=True)
    picked = time.time() - started
    pick, _ = opt.get_best_model(accuracy_criterion=0.01)
    sample = (training[0][0], training[0][1])
    with tempfile.TemporaryDirectory() as tmp:
        torch.set_num_threads(threads)
        hand = by_hand(model, training, sample, threads, capability, tmp)
        contenders = {f"pick: {pick.method.name}": lambda ids, mask: pick(ids, mask), **hand}
        with torch.no_grad():
            kept = {name: min(cosine(fn(ids, mask), want) for ids, mask, want in validation)
                    for name, fn in contenders.items()}
            medians = time_side_by_side({n: (lambda fn=fn: fn(*sample))
                                         for n, fn in contenders.items()}, rounds=args.rounds)
    eager = medians["eager fp32"]
    print(f"\n{'contender':34} {'min cos':>8} {'median ms':>10} {'vs eager':>9}")
    for name in contenders:
        print(f"{name:34} {kept[name]:8.4f} {medians[name] * 1e3:10.3f} "
              f"{eager / medians[name]:8.2f}x")
    keeping = [n for n in hand if kept[n] >= KEEP]
    best = min(keeping, key=lambda n: medians[n])
    pick_name = next(iter(contenders))
    ratio = medians[best] / medians[pick_name]
    print(f"\ntime to pick: {picked:.1f} s; the pick {eager / medians[pick_name]:.2f}x eager "
          f"(cos {kept[pick_name]:.4f})")
    print(f"best by hand with cos >= {KEEP}: {best}; pick / best by hand: {ratio:.3f} "
          f"(target >= 0.95: {'met' if ratio >= 0.95 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
