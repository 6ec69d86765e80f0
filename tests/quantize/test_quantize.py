"""INT8 on every runtime: accuracy kept on a trained digits CNN, accuracy-aware search, bad input."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nano import InferenceOptimizer
from nano.errors import DataMismatch
from nano.quantize import AccuracyCriterionError
from tests.conftest import accuracy

pytestmark = pytest.mark.slow  # every test here builds runtimes or starts processes

RUNTIMES = [(None, None), ("onnxruntime", "qdq"), ("onnxruntime", "qlinear"), ("openvino", None)]


@pytest.fixture(scope="module")
def calib(digits):
    (x, y), _ = digits
    return DataLoader(TensorDataset(x[:256], y[:256]), batch_size=32)


@pytest.fixture(scope="module")
def quantized(digits_cnn, calib):
    return {(acc, meth): InferenceOptimizer.quantize(digits_cnn, accelerator=acc, method=meth,
                                                     calib_data=calib)
            for acc, meth in RUNTIMES}


@pytest.mark.parametrize("key", RUNTIMES, ids=lambda k: f"{k[0]}-{k[1]}")
def test_int8_keeps_accuracy_and_outputs(quantized, digits_cnn, digits, key):
    _, (tx, ty) = digits
    model = quantized[key]
    assert model.method.precision == "int8"
    with torch.no_grad():
        ref = digits_cnn(tx)
    out = model(tx)
    assert accuracy(out, ty) >= accuracy(ref, ty) - 0.01
    rel = ((out - ref).abs().max() / ref.abs().max()).item()
    assert 0 < rel < 0.1  # really quantized, and close


def test_pt2e_really_quantized(quantized):
    from nano.runtimes.backends.pt2e_int8 import count_quantize_nodes

    assert count_quantize_nodes(quantized[(None, None)].graph_module) > 0


def test_dynamic_int8_on_a_linear_model(digits_cnn, digits):
    _, (tx, ty) = digits
    model = InferenceOptimizer.quantize(digits_cnn, accelerator="onnxruntime", approach="dynamic",
                                        input_sample=tx[:1])
    assert model.method.name == "onnxruntime_int8_integer"
    assert accuracy(model(tx), ty) >= accuracy(digits_cnn(tx), ty) - 0.01


def test_saved_int8_models_load_in_a_fresh_process(quantized, digits, tmp_path):
    _, (tx, _) = digits
    expected = {}
    for i, key in enumerate(RUNTIMES):
        InferenceOptimizer.save(quantized[key], str(tmp_path / f"m{i}"))
        expected[i] = quantized[key](tx[:8])
    torch.save({"x": tx[:8], "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import torch
        from nano import InferenceOptimizer
        io = torch.load({str(tmp_path / 'io.pt')!r})
        for i, want in io["expected"].items():
            got = InferenceOptimizer.load({str(tmp_path)!r} + f"/m{{i}}")(io["x"])
            assert torch.allclose(got, want, atol=1e-4), (i, (got - want).abs().max())
        print("ALL SAME")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, PYTHONPATH=""), cwd="/")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ALL SAME" in out.stdout


@pytest.mark.parametrize("accelerator", [None, "openvino"])
def test_accuracy_aware_picks_a_passing_model(digits_cnn, digits, calib, accelerator):
    _, (tx, ty) = digits
    base = accuracy(digits_cnn(tx), ty)
    model = InferenceOptimizer.quantize(digits_cnn, accelerator=accelerator, calib_data=calib,
                                        metric=accuracy, validation_data=(tx, ty),
                                        accuracy_criterion=0.01, max_trials=2)
    assert accuracy(model(tx), ty) >= base * 0.99


def test_impossible_criterion_is_refused_with_the_best_model(digits_cnn, digits, calib):
    _, (tx, ty) = digits
    with torch.no_grad():
        reference = digits_cnn(tx)

    def closeness(pred, target):  # 0 for fp32 itself, below 0 for any change at all
        return -(pred - reference).abs().mean().item()

    with pytest.raises(AccuracyCriterionError, match="no onnxruntime_int8_qdq configuration") as e:
        InferenceOptimizer.quantize(digits_cnn, accelerator="onnxruntime", calib_data=calib,
                                    metric=closeness, validation_data=(tx, ty),
                                    accuracy_criterion={"absolute": 0.0}, max_trials=2)
    assert e.value.best_model is not None and e.value.best_drop > 0
    assert len(e.value.trials) == 2 and "drop" in str(e.value)


def test_max_trials_counts_nncf_accuracy_control(digits_cnn, digits, calib):
    _, (tx, ty) = digits
    with torch.no_grad():
        reference = digits_cnn(tx)

    def closeness(pred, target):  # only the fp32 original itself reaches 0
        return -(pred - reference).abs().mean().item()

    with pytest.raises(AccuracyCriterionError) as e:
        InferenceOptimizer.quantize(digits_cnn, accelerator="openvino", calib_data=calib,
                                    metric=closeness, validation_data=(tx, ty),
                                    accuracy_criterion={"absolute": 0.0}, max_trials=2)
    labels = [label for label, _ in e.value.trials]
    assert len(labels) == 2 and "NNCF accuracy control" in labels[1], labels


def test_optimize_includes_int8_with_calibration_data(digits_cnn, digits, calib):
    _, (tx, ty) = digits
    opt = InferenceOptimizer()
    opt.optimize(digits_cnn, calib, validation_data=(tx, ty), metric=accuracy, precision="int8",
                 latency_sample_num=10, latency_budget=1, early_stop_factor=None,
                 search_mode="all")
    rows = {r.name: r for r in opt.results}
    assert set(rows) == {"original", "compile_int8", "compile_int8_torchao",
                         "onnxruntime_int8_qdq", "onnxruntime_int8_qlinear",
                         "onnxruntime_int8_integer", "openvino_int8", "int8_ipex"}
    from nano.runtimes.backends.ipex import ipex_unavailable

    from nano.launcher.capability import current

    if ipex_unavailable():  # IPEX's row says why (the IPEX lane runs it)
        assert rows.pop("int8_ipex").status == "unavailable"
    if current().int8_saturates:  # torchao has no 7-bit scheme: its row says why
        row = rows.pop("compile_int8_torchao")
        assert row.status == "unavailable" and "saturate" in row.detail, row
    for name, row in rows.items():
        assert row.status == "ok", (name, row.detail)
        assert row.accuracy >= rows["original"].accuracy - 0.01
    model, _ = opt.get_best_model(precision="int8", accuracy_criterion=0.01)
    assert model.method.precision == "int8"


def test_bf16_through_quantize(digits_cnn, digits):
    _, (tx, ty) = digits
    model = InferenceOptimizer.quantize(digits_cnn, precision="bf16", accelerator="openvino",
                                        input_sample=tx[:4])
    assert model.method.name == "openvino_bf16"
    assert accuracy(model(tx), ty) >= accuracy(digits_cnn(tx), ty) - 0.01


@pytest.mark.parametrize("kwargs,error,fragment", [
    (dict(calib_data=None), ValueError, "calib_data is required"),
    (dict(calib_data=[]), ValueError, "calib_data is empty"),
    (dict(calib_data=DataLoader(TensorDataset(torch.rand(0, 1, 8, 8)), batch_size=4)),
     ValueError, "calib_data is empty"),
    (dict(calib_data=torch.rand(4, 1, 9, 9), input_sample=torch.rand(1, 1, 8, 8)), ValueError,
     "calib_data does not fit the model.s inputs: input 0 has shape (4, 1, 9, 9)"),
    (dict(calib_data=torch.rand(4, 1, 8, 8).double(), input_sample=torch.rand(1, 1, 8, 8)),
     ValueError, "calib_data does not fit the model.s inputs: input 0 has dtype torch.float64"),
    (dict(calib_data=torch.rand(4, 3, 8, 8)), DataMismatch,
     "calib_data does not fit the model.s inputs: given float32 (4, 3, 8, 8); its first layer "
     "conv1 (Conv2d) expects 1 channels"),
    (dict(metric=lambda p, t: 1 / 0, accuracy_criterion=0.01), RuntimeError,
     "metric raised ZeroDivisionError"),
    (dict(metric=lambda p, t: "great", accuracy_criterion=0.01), TypeError,
     "metric must return a number"),
    (dict(metric=accuracy, accuracy_criterion=1.5), ValueError, "between 0 and 1"),
    (dict(metric=accuracy, accuracy_criterion={"absolute": -1}), ValueError, ">= 0"),
    (dict(metric=accuracy, accuracy_criterion={"relativ": 0.1}), ValueError, "exactly one of"),
    (dict(accuracy_criterion=0.01), ValueError, "needs a metric"),
    (dict(accelerator="jit"), ValueError, "accelerator='jit' INT8 is IPEX's static INT8"),
    (dict(accelerator="onnxruntime", method="qlinar"), ValueError, "method for onnxruntime"),
    (dict(approach="sometimes"), ValueError, "approach must be"),
    (dict(accelerator="openvino", approach="dynamic"), ValueError, "static only"),
    (dict(precision="int4"), ValueError, "unknown precision 'int4'"),
    (dict(calib_samples=3), TypeError, "unknown option"),  # not a quantize() argument
])
def test_bad_input_names_the_argument(digits_cnn, digits, kwargs, error, fragment):
    (x, y), _ = digits
    kwargs.setdefault("calib_data", (x[:32], y[:32]))
    if "metric" in kwargs:
        kwargs.setdefault("validation_data", (x[:64], y[:64]))
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        InferenceOptimizer.quantize(digits_cnn, **kwargs)


def test_quant_config_rejects_unknown_options():
    from nano.runtimes.quant_config import QuantConfig

    with pytest.raises(TypeError, match="unknown quantization option"):
        QuantConfig.from_options({"per_chanel": False})
    with pytest.raises(ValueError, match="keep_fp32"):
        QuantConfig(keep_fp32="some")


def test_neural_compressor_tunes_pytorch_int8(digits_cnn, digits, calib, monkeypatch):
    from nano.quantize import inc

    if inc.unavailable_reason():
        pytest.skip(inc.unavailable_reason())
    calls = []
    real = inc.autotune_pt2e
    monkeypatch.setattr(inc, "autotune_pt2e", lambda *a, **k: calls.append(1) or real(*a, **k))
    from nano.launcher.capability import current

    _, (tx, ty) = digits
    model = InferenceOptimizer.quantize(digits_cnn, calib_data=calib, metric=accuracy,
                                        validation_data=(tx, ty), accuracy_criterion=0.01)
    assert model.method.name.startswith("compile_int8")
    if current().int8_saturates:  # its configurations have no 7-bit scheme: Nano's trials
        assert not calls and model.int8_scheme == "7-bit"
    else:
        assert calls and model.method.name == "compile_int8"
    assert accuracy(model(tx), ty) >= accuracy(digits_cnn(tx), ty) * 0.99


def test_a_list_of_same_shaped_tensors_is_a_list_of_batches(digits_cnn, digits):
    """BigDL-Nano's form: eight sample tensors for a one-input model are eight batches."""
    (x, _), _ = digits
    calib = [x[i:i + 1] for i in range(8)]
    model = InferenceOptimizer.quantize(digits_cnn, accelerator="onnxruntime", calib_data=calib)
    with torch.no_grad():
        agree = (model(x[:64]).argmax(1) == digits_cnn(x[:64]).argmax(1)).float().mean()
    assert agree >= 0.9


def test_a_list_of_tensors_stays_one_batch_where_the_model_takes_that_many():
    from nano.runtimes.data import ForwardParams, as_batches

    class Two(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    class One(torch.nn.Module):
        def forward(self, a):
            return a

    pair = [torch.randn(2, 3), torch.randn(2, 3)]
    assert len(as_batches(pair, "calib_data", params=ForwardParams.of(Two()))) == 1
    # two tensors for a one-input model may be (input, target): one batch, as before
    assert len(as_batches(pair, "calib_data", params=ForwardParams.of(One()))) == 1
    eight = [torch.randn(1, 3) for _ in range(8)]
    assert len(as_batches(eight, "calib_data", params=ForwardParams.of(One()))) == 8
    unlike = [torch.randn(1, 3), torch.randn(1, 5), torch.randn(1, 3)]  # not one kind
    with pytest.raises(DataMismatch, match="batches hold 3"):
        from nano.runtimes.data import split_batch

        split_batch(as_batches(unlike, "calib_data", params=ForwardParams.of(One()))[0],
                    ForwardParams.of(One()), "calib_data")
