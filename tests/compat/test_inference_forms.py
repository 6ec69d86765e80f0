"""BigDL-Nano 2.4's InferenceOptimizer call forms, as its documentation shows them.

Each test is code a BigDL-Nano user already has: it must run unchanged on Nano,
or fail with a message that names what to do instead.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nano import InferenceOptimizer
from nano.errors import DataMismatch, NanoError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Classifier(nn.Module):
    """A user's model with attributes and a helper method next to forward."""

    def __init__(self, features=8, classes=3):
        super().__init__()
        self.fc1 = nn.Linear(features, 16)
        self.fc2 = nn.Linear(16, classes)
        self.num_classes = classes

    def describe(self):
        return f"{self.num_classes}-way classifier"

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class Masked(nn.Module):
    """Two inputs, the second optional."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x, mask=None):
        y = self.fc(x)
        return y if mask is None else y * mask


class Video(nn.Module):
    """A Conv3d model: channels_last for 5-D tensors is channels_last_3d."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.conv(x).mean((2, 3, 4)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Classifier().eval()


def loader(n=64, batch=16, features=8):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, features, generator=g)
    return DataLoader(TensorDataset(x, torch.randint(0, 3, (n,), generator=g)), batch_size=batch)


def x(batch=4, seed=5):
    return torch.randn(batch, 8, generator=torch.Generator().manual_seed(seed))


def assert_close(a, b, tol=1e-4):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol * max(b.abs().max().item(), 1e-6)


# trace() -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ["onnxruntime", "openvino", "jit"])
def test_trace_positional_in_bigdl_order(model, accelerator):
    fast = InferenceOptimizer.trace(model, x(2), accelerator)
    assert_close(fast(x()), model(x()))


def test_trace_in_nanos_earlier_order_still_works(model):
    fast = InferenceOptimizer.trace(model, "onnxruntime", x(2))
    assert fast.method.name == "onnxruntime_fp32"


def test_unknown_accelerator_is_brief_and_catchable_as_runtime_error(model):
    with pytest.raises(RuntimeError) as info:  # BigDL raised RuntimeError for this
        InferenceOptimizer.trace(model, x(2), "onnx runtime")
    assert isinstance(info.value, ValueError) and isinstance(info.value, NanoError)
    message = str(info.value)
    assert "'onnx runtime'" in message and "valid:" in message
    assert "tensor(" not in message and len(message) < 200


def test_trace_without_sample_plain_and_jit(model):
    eager = InferenceOptimizer.trace(model)
    scripted = InferenceOptimizer.trace(model, accelerator="jit")
    assert scripted.scripted
    for fast in (eager, scripted):
        assert_close(fast(x()), model(x()))
    with pytest.raises(ValueError, match="input_sample is required for onnxruntime_fp32"):
        InferenceOptimizer.trace(model, accelerator="onnxruntime")


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ["onnxruntime", "openvino", "jit"])
def test_output_tensors_false_gives_numpy_also_after_load(model, accelerator, tmp_path):
    fast = InferenceOptimizer.trace(model, x(2), accelerator, output_tensors=False)
    out = fast(x())
    assert isinstance(out, np.ndarray)
    assert_close(out, model(x()).detach())
    InferenceOptimizer.save(fast, str(tmp_path))
    assert isinstance(InferenceOptimizer.load(str(tmp_path))(x()), np.ndarray)


def test_openvino_config_is_applied_and_saved(model, tmp_path):
    fast = InferenceOptimizer.trace(model, x(2), "openvino",
                                    openvino_config={"PERFORMANCE_HINT": "THROUGHPUT"})
    assert str(fast.compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    InferenceOptimizer.save(fast, str(tmp_path))
    loaded = InferenceOptimizer.load(str(tmp_path))
    assert str(loaded.compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"


def test_onnxruntime_session_options_are_applied_and_saved(model, tmp_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.enable_mem_pattern = False
    fast = InferenceOptimizer.trace(model, x(2), "onnxruntime",
                                    onnxruntime_session_options=options, thread_num=1)
    InferenceOptimizer.save(fast, str(tmp_path))
    loaded = InferenceOptimizer.load(str(tmp_path))
    for m in (fast, loaded):
        used = m.session.get_session_options()
        assert used.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        assert not used.enable_mem_pattern and used.intra_op_num_threads == 1
    assert_close(loaded(x()), model(x()))


@pytest.mark.parametrize("jit_method,scripted", [("trace", False), ("script", True)])
def test_jit_method_and_strict(model, jit_method, scripted):
    fast = InferenceOptimizer.trace(model, x(2), "jit", jit_method=jit_method, jit_strict=True)
    assert fast.scripted is scripted
    assert_close(fast(x()), model(x()))


def test_runtime_options_for_another_runtime_are_refused(model):
    with pytest.raises(ValueError, match="openvino_config applies to accelerator='openvino'"):
        InferenceOptimizer.trace(model, x(2), "onnxruntime", openvino_config={})
    with pytest.raises(ValueError, match="jit_method must be 'trace', 'script'"):
        InferenceOptimizer.trace(model, x(2), "jit", jit_method="freeze")


@pytest.mark.parametrize("dynamic_axes,batch_ok", [(True, True), (False, False),
                                                   ({"x": [0]}, True)])
def test_dynamic_axes_forms(model, dynamic_axes, batch_ok):
    fast = InferenceOptimizer.trace(model, x(2), "openvino", dynamic_axes=dynamic_axes)
    assert_close(fast(x(2)), model(x(2)))
    if batch_ok:
        assert_close(fast(x(5)), model(x(5)))
    else:
        with pytest.raises(RuntimeError):  # OpenVINO's own shape error for a static model
            fast(x(5))


def test_example_kwarg_inputs():
    torch.manual_seed(0)
    masked = Masked().eval()
    mask = torch.ones(2, 3)
    fast = InferenceOptimizer.trace(masked, x(2), "onnxruntime",
                                    example_kwarg_inputs={"mask": mask})
    m3 = torch.rand(4, 3)
    assert_close(fast(x(), mask=m3), masked(x(), mask=m3))


def test_no_op_options_accepted_and_refused_options_say_why(model):
    InferenceOptimizer.trace(model, x(2), "onnxruntime", logging=False, simplification=True)
    with pytest.raises(ValueError, match="weights_prepack= is not supported: an IPEX tuning"):
        InferenceOptimizer.trace(model, x(2), weights_prepack=False)
    with pytest.raises(TypeError, match="unknown option 'acclerator'"):
        InferenceOptimizer.trace(model, x(2), acclerator="jit")
    with pytest.raises(ValueError, match="device='GPU': Nano runs models on the CPU only"):
        InferenceOptimizer.trace(model, x(2), "openvino", device="GPU")


@pytest.mark.parametrize("accelerator", [None, "jit"])
def test_channels_last_on_conv3d(accelerator):
    torch.manual_seed(0)
    video = Video().eval()
    clip = torch.rand(1, 3, 4, 8, 8)
    fast = InferenceOptimizer.trace(video, clip, accelerator, channels_last=True)
    other = torch.rand(2, 3, 4, 8, 8)
    assert_close(fast(other), video(other))
    module = fast.module if accelerator is None else None
    if module is not None:
        assert module.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)


# quantize() ----------------------------------------------------------------------


@pytest.mark.slow
def test_quantize_with_calib_dataloader_and_eval_func(model):
    calls = []

    def eval_func(m):  # BigDL's form: the model only
        calls.append(m)
        with torch.no_grad():
            return -float((m(x(32)) - model(x(32))).abs().mean())

    fast = InferenceOptimizer.quantize(model, accelerator="onnxruntime",
                                       calib_dataloader=loader(), eval_func=eval_func,
                                       accuracy_criterion={"absolute": 0.05})
    assert fast.method.precision == "int8" and calls
    # The promise is eval_func's: a mean absolute error within 0.05. The fastest passing
    # rung is picked, so which one (and its largest single error) varies run to run; the
    # promise must hold on its data and on fresh values alike.
    assert -eval_func(fast) <= 0.05
    fresh = x(256, seed=9)
    with torch.no_grad():
        assert (fast(fresh) - model(fresh)).abs().mean().item() <= 0.05


def test_quantize_positional_data_in_the_wrong_place_is_named(model):
    with pytest.raises(TypeError, match="use_ipex must be True or False, got a DataLoader; "
                                        "quantize\\(\\) takes BigDL-Nano's order"):
        InferenceOptimizer.quantize(model, "int8", "onnxruntime", loader())


@pytest.mark.slow
def test_quantize_tuning_strategy_is_accepted_with_a_note(model):
    with pytest.warns(UserWarning, match="tuning_strategy='bayesian' is accepted"):
        InferenceOptimizer.quantize(model, accelerator="openvino", calib_data=loader(),
                                    tuning_strategy="bayesian")
    with pytest.raises(ValueError, match="unknown tuning_strategy 'smart'"):
        InferenceOptimizer.quantize(model, calib_data=loader(), tuning_strategy="smart")


@pytest.mark.slow
def test_bf16_and_dynamic_need_no_calibration_data(model):
    bf16 = InferenceOptimizer.quantize(model, precision="bf16")  # no data at all
    assert bf16.method.name == "bf16" and bf16(x()).dtype == torch.float32
    assert_close(bf16(x()), model(x()), tol=0.05)
    jit_bf16 = InferenceOptimizer.quantize(model, precision="bf16", accelerator="jit")
    assert_close(jit_bf16(x()), model(x()), tol=0.05)
    for accelerator in ("onnxruntime", None):
        dynamic = InferenceOptimizer.quantize(model, accelerator=accelerator, approach="dynamic",
                                              input_sample=x(2))
        assert_close(dynamic(x()), model(x()), tol=0.2)  # INT8 on an 8-16-3 net


def test_quantize_bf16_channels_last_and_dynamic_axes():
    torch.manual_seed(0)
    video = Video().eval()
    clip = torch.rand(1, 3, 4, 8, 8)
    fast = InferenceOptimizer.quantize(video, precision="bf16", channels_last=True)
    assert fast.method.name == "bf16_channels_last"
    assert_close(fast(clip), video(clip), tol=0.05)
    fixed = InferenceOptimizer.quantize(video, precision="bf16", accelerator="openvino",
                                        input_sample=clip, dynamic_axes=False)
    with pytest.raises(RuntimeError):
        fixed(torch.rand(2, 3, 4, 8, 8))


@pytest.mark.slow
def test_quantize_an_accelerated_model_starts_from_its_original(model, tmp_path):
    ov = InferenceOptimizer.trace(model, x(2), "openvino")
    q = InferenceOptimizer.quantize(ov, accelerator="openvino", calib_data=loader())
    assert q.original is model and q.method.name == "openvino_int8"
    InferenceOptimizer.save(ov, str(tmp_path))
    orphan = InferenceOptimizer.load(str(tmp_path))
    with pytest.raises(ValueError, match="quantize\\(\\) needs the original nn.Module: this "
                                         "openvino_fp32 model was loaded without it"):
        InferenceOptimizer.quantize(orphan, accelerator="openvino", calib_data=loader())
    adopted = InferenceOptimizer.load(str(tmp_path), model=model)
    assert InferenceOptimizer.quantize(adopted, accelerator="openvino",
                                       calib_data=loader()).original is model


# save() / load() -----------------------------------------------------------------


def test_save_a_plain_module_and_load_it(model, tmp_path):
    InferenceOptimizer.save(model, str(tmp_path / "plain"))
    loaded = InferenceOptimizer.load(str(tmp_path / "plain"), model=Classifier())
    assert loaded.method.name == "original"
    assert_close(loaded(x()), model(x()), tol=0)


def test_save_with_bf16_compression(model, tmp_path):
    torch.manual_seed(0)
    wide = Classifier(features=256).eval()
    InferenceOptimizer.save(wide, str(tmp_path / "fp32"))
    InferenceOptimizer.save(wide, str(tmp_path / "bf16"), compression="bf16")
    size = {k: os.path.getsize(tmp_path / k / "state_dict.pt") for k in ("fp32", "bf16")}
    assert size["bf16"] < 0.6 * size["fp32"]
    loaded = InferenceOptimizer.load(str(tmp_path / "bf16"), model=Classifier(features=256))
    assert loaded.module.fc1.weight.dtype == torch.float32
    wide_x = torch.randn(4, 256)
    assert_close(loaded(wide_x), wide(wide_x), tol=0.02)
    ort = InferenceOptimizer.trace(model, x(2), "onnxruntime")
    with pytest.raises(ValueError, match="compression='bf16' applies to models saved as state"):
        InferenceOptimizer.save(ort, str(tmp_path / "ort"), compression="bf16")


def test_load_takes_bigdls_arguments(model, tmp_path):
    InferenceOptimizer.save(InferenceOptimizer.trace(model, x(2), "openvino"), str(tmp_path))
    loaded = InferenceOptimizer.load(str(tmp_path), model=None, input_sample=x(2), device="CPU")
    assert_close(loaded(x()), model(x()))
    with pytest.raises(ValueError, match="CPU only"):
        InferenceOptimizer.load(str(tmp_path), device="GPU")


@pytest.mark.slow
def test_original_attributes_and_methods_reachable(model, tmp_path):
    fast = InferenceOptimizer.trace(model, x(2), "onnxruntime")
    assert fast.num_classes == 3 and fast.describe() == "3-way classifier"
    InferenceOptimizer.save(fast, str(tmp_path))
    assert InferenceOptimizer.load(str(tmp_path), model=model).describe() == "3-way classifier"
    with pytest.raises(AttributeError):
        InferenceOptimizer.load(str(tmp_path)).num_classes  # no original given: not invented
    code = ("from nano import InferenceOptimizer; from tests.compat.test_inference_forms import "
            f"Classifier; m = InferenceOptimizer.load({str(tmp_path)!r}, model=Classifier(5, 7));"
            " print(m.num_classes, m.describe())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "7 7-way classifier", done.stderr[-2000:]


def test_openvino_async_predict(model):
    fast = InferenceOptimizer.trace(model, x(2), "openvino")
    inputs = [x(3, seed) for seed in range(6)]
    outputs = fast.async_predict(inputs, num_requests=2)
    assert len(outputs) == len(inputs)
    for out, inp in zip(outputs, inputs):
        assert_close(out, model(inp))
    assert len(fast.async_predict(inputs[:1], num_requests=0)) == 1


# data forms ----------------------------------------------------------------------


def test_input_sample_as_a_dataloader(model):
    fast = InferenceOptimizer.trace(model, loader(), "onnxruntime")  # its first batch, no label
    assert fast.signature.tensor_names == ["x"]
    assert_close(fast(x()), model(x()))


def _masked_batches(form):
    g = torch.Generator().manual_seed(3)
    out = []
    for _ in range(8):
        xb, mb, yb = torch.randn(16, 8, generator=g), torch.rand(16, 3, generator=g), torch.zeros(16)
        out.append({"plain": (xb, mb, yb), "nested": ((xb, mb), yb),
                    "dict": {"x": xb, "mask": mb, "labels": yb}}[form])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("form", ["plain", "nested", "dict"])  # (inputs..., target),
def test_batch_forms_are_matched_to_forward_including_defaults(form):  # ((inputs...), target)
    torch.manual_seed(0)
    masked = Masked().eval()
    fast = InferenceOptimizer.quantize(masked, accelerator="onnxruntime",
                                       calib_data=_masked_batches(form))
    assert fast.signature.tensor_names == ["x", "mask"]
    m = torch.rand(4, 3)
    assert_close(fast(x(), m), masked(x(), m), tol=0.15)


def test_data_that_does_not_fit_is_one_clear_error(model):
    wrong_features = DataLoader(TensorDataset(torch.rand(16, 30), torch.zeros(16)), batch_size=4)
    with pytest.raises(DataMismatch, match=r"calib_data does not fit the model's inputs: given "
                                           r"float32 \(4, 30\); its first layer fc1 \(Linear\) "
                                           r"expects 8 input features"):
        InferenceOptimizer.quantize(model, accelerator="openvino", calib_data=wrong_features)
    too_many = [(x(4), x(4), x(4), torch.zeros(4))]
    with pytest.raises(DataMismatch, match="training_data does not fit the model's inputs"):
        InferenceOptimizer().optimize(model, training_data=too_many, includes=["original"])
    with pytest.raises(DataMismatch, match="input_sample does not fit the model's inputs"):
        InferenceOptimizer.trace(model, torch.rand(2, 5), "onnxruntime")


# optimize() ----------------------------------------------------------------------


@pytest.mark.slow
def test_optimize_search_modes_and_optimized_model_dict(model, tmp_path):
    opt = InferenceOptimizer()
    with pytest.raises(ValueError, match="search_mode='grid' searches the methods matching"):
        opt.optimize(model, training_data=loader(), search_mode="grid")
    with pytest.raises(ValueError, match="search_mode must be"):
        opt.optimize(model, training_data=loader(), search_mode="fast")
    report = tmp_path / "summary.txt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.optimize(model, training_data=loader(), input_sample=x(1), search_mode="grid",
                     accelerator="onnxruntime", precision="fp32", latency_sample_num=10,
                     output_filename=str(report), final_round=False)
    assert "onnxruntime_fp32" in report.read_text()
    results = opt.optimized_model_dict
    assert set(results) == {"original", "onnxruntime_fp32"}
    entry = results["onnxruntime_fp32"]
    assert entry["status"] == "successful" and entry["nano_status"] == "ok" and entry["latency"] > 0
    assert_close(entry["model"](x()), model(x()))
    with pytest.raises(TypeError):
        results["bf16"] = {}  # a read-only view
