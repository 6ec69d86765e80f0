"""trace(): every runtime is called like the original and returns the original's structure."""

import copy

import pytest
import torch

from nano import InferenceOptimizer
from nano.runtimes.availability import MissingDependency
from nano.models import TinyEncoder
from tests.inference.models import DtypeSpy, SmallCNN, TwoInput

ACCELERATORS = [None, "jit", "onnxruntime", "openvino"]


def close(a, b, tol=1e-4):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, (tuple, list)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(close(x, y, tol) for x, y in zip(a, b)))
    return a.dtype == b.dtype and a.shape == b.shape and torch.allclose(a, b, atol=tol, rtol=tol)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN().eval()


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_cnn_any_batch_size(cnn, accelerator):
    model = InferenceOptimizer.trace(cnn, accelerator=accelerator, input_sample=torch.rand(2, 1, 8, 8))
    for batch in (1, 2, 7):  # 2: the sample's shape, which OpenVINO serves from a static copy
        x = torch.rand(batch, 1, 8, 8)
        assert close(model(x), cnn(x))


@pytest.mark.slow
def test_openvino_static_copy_for_the_sample_shape_survives_save(cnn, tmp_path):
    model = InferenceOptimizer.trace(cnn, accelerator="openvino", input_sample=torch.rand(2, 1, 8, 8))
    assert model._static_key == ((2, 1, 8, 8),)
    InferenceOptimizer.save(model, str(tmp_path))
    loaded = InferenceOptimizer.load(str(tmp_path))
    assert loaded._static_key == ((2, 1, 8, 8),)
    for batch in (2, 3):
        x = torch.rand(batch, 1, 8, 8)
        assert close(loaded(x), cnn(x))


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_encoder_masks_and_dict_output(accelerator):
    torch.manual_seed(0)
    enc = TinyEncoder().eval()
    ids = torch.randint(0, 1000, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    model = InferenceOptimizer.trace(enc, accelerator=accelerator,
                                     input_sample=((ids,), {"attention_mask": mask}))
    ids3 = torch.randint(0, 1000, (3, 12))
    mask3 = torch.ones(3, 12, dtype=torch.long)
    mask3[1, 5:] = 0
    out = model(ids3, attention_mask=mask3)
    assert isinstance(out, dict) and list(out) == ["last_hidden_state", "pooled"]
    assert close(out, enc(ids3, attention_mask=mask3))


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_two_inputs_with_keywords(accelerator):
    torch.manual_seed(0)
    two = TwoInput().eval()
    x, e = torch.rand(4, 6), torch.rand(4, 3)
    model = InferenceOptimizer.trace(two, accelerator=accelerator, input_sample=((x,), {"extra": e}))
    assert close(model(x, extra=e), two(x, extra=e))
    assert close(model(x, e), two(x, e))  # positionally too
    assert close(model(extra=e, x=x), two(x, e))


@pytest.mark.slow
def test_compile_runs_and_matches(cnn):
    model = InferenceOptimizer.trace(cnn, accelerator="compile", input_sample=torch.rand(2, 1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    assert close(model(x), cnn(x))


def test_bf16_is_active_inside_the_call_without_context():
    from nano.runtimes.methods import Method
    from nano.optimizer import build_method

    spy = DtypeSpy().eval()
    model = build_method(spy, Method("pytorch", "bf16", channels_last=True), torch.rand(2, 3, 3, 4))
    model.module.seen.clear()
    out = model(torch.rand(2, 3, 3, 4))
    assert model.module.seen[-1][0] == torch.bfloat16
    assert out.dtype == torch.float32  # handed back in the original's dtype


def test_channels_last_is_active_inside_the_call():
    from nano.runtimes.methods import Method
    from nano.optimizer import build_method

    spy = DtypeSpy().eval()
    model = build_method(spy, Method("pytorch", "fp32", channels_last=True), torch.rand(2, 3, 3, 4))
    model.module.seen.clear()
    model(torch.rand(2, 3, 3, 4))
    assert model.module.seen[-1] == (torch.float32, True)


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ["jit", "compile", "openvino"])
def test_bf16_runtimes_really_compute_in_bf16(cnn, accelerator):
    from nano.runtimes.methods import Method
    from nano.optimizer import build_method

    from nano.launcher.capability import current

    x = torch.rand(4, 1, 8, 8)
    model = build_method(cnn, Method(accelerator, "bf16"), x)
    err = (model(x) - cnn(x)).abs().max().item()
    if accelerator == "openvino" and not current().native("bf16"):
        assert err < 1e-5  # no bf16 kernels here: OpenVINO computes in f32 (and warns)
    else:  # native, or emulated by PyTorch
        assert 1e-5 < err < 0.1  # bf16 rounding visible, but close


@pytest.mark.slow
def test_user_model_untouched(cnn):
    model = copy.deepcopy(cnn).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for acc in ACCELERATORS:
        InferenceOptimizer.trace(model, accelerator=acc, input_sample=torch.rand(2, 1, 8, 8),
                                 channels_last=acc in (None, "jit"))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.conv1.weight.is_contiguous()


def test_accelerated_model_is_inference_only(cnn):
    model = InferenceOptimizer.trace(cnn, accelerator="onnxruntime", input_sample=torch.rand(1, 1, 8, 8))
    assert not model.training
    model.eval()
    with pytest.raises(RuntimeError, match="inference model"):
        model.train()
    with InferenceOptimizer.get_context(model):  # kept for compatibility, not needed
        model(torch.rand(1, 1, 8, 8))


def test_static_shapes_when_asked(cnn):
    model = InferenceOptimizer.trace(cnn, accelerator="openvino", input_sample=torch.rand(2, 1, 8, 8),
                                     dynamic_axes=False)
    with pytest.raises(RuntimeError, match="shape"):  # OpenVINO's own shape check
        model(torch.rand(5, 1, 8, 8))


@pytest.mark.parametrize("kwargs,error,fragment", [
    (dict(accelerator="onnx runtime"), ValueError, "valid: None (plain PyTorch)"),
    (dict(accelerater="jit"), TypeError, "unknown option 'accelerater'"),
    (dict(accelerator="openvino", use_ipex=True), ValueError, "use_ipex"),
    (dict(accelerator="onnxruntime", channels_last=True), ValueError, "channels_last"),
    (dict(input_sample=None, accelerator="openvino"), ValueError,
     "input_sample is required for openvino_fp32"),
    (dict(dynamic_axes={"nope": [0]}), ValueError, "unknown input"),
])
def test_bad_options_are_clear(cnn, kwargs, error, fragment):
    kwargs.setdefault("input_sample", torch.rand(1, 1, 8, 8))
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        InferenceOptimizer.trace(cnn, **kwargs)


def test_missing_ipex_is_a_clear_message(cnn):
    from nano.runtimes.backends.ipex import ipex_unavailable

    if ipex_unavailable() is None:
        pytest.skip("IPEX is installed and usable here")
    with pytest.raises(MissingDependency, match="unavailable"):
        InferenceOptimizer.trace(cnn, use_ipex=True, input_sample=torch.rand(1, 1, 8, 8))


class ThreadSpy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(2, 2)
        self.threads = []

    def forward(self, x):
        self.threads.append(torch.get_num_threads())
        return self.l(x)


def test_thread_count_applied_inside_the_call_and_restored():
    before = torch.get_num_threads()
    model = InferenceOptimizer.trace(ThreadSpy(), input_sample=torch.rand(1, 2), thread_num=1)
    model.module.threads.clear()
    model(torch.rand(1, 2))
    assert model.module.threads == [1]
    assert torch.get_num_threads() == before
