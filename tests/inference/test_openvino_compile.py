"""openvino_compile: torch.compile(backend="openvino"), added as one module plus one list entry.

It must give the original's numbers on fresh values, keep each call's outputs
(OpenVINO hands back its own buffers), save and load in a fresh process like
compile_*, appear in optimize()'s table, and refuse what it does not build.
"""

import os
import subprocess
import sys

import pytest
import torch

from nano import InferenceOptimizer
from nano.runtimes.availability import MissingDependency
from tests.inference.models import SmallCNN

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cnn_and_model():
    torch.manual_seed(0)
    cnn = SmallCNN().eval()
    return cnn, InferenceOptimizer.trace(cnn, accelerator="openvino_compile",
                                         input_sample=torch.rand(2, 1, 8, 8))


def test_kept_outputs_are_each_calls_own(cnn_and_model):
    cnn, model = cnn_and_model
    inputs = [torch.rand(2, 1, 8, 8) for _ in range(3)] + [torch.rand(5, 1, 8, 8)]
    with torch.no_grad():
        kept = [model(x) for x in inputs]  # a list of predictions, compared afterwards
        for x, got in zip(inputs, kept, strict=True):
            torch.testing.assert_close(got, cnn(x), rtol=1e-4, atol=1e-5)


def test_save_then_load_in_a_fresh_process(cnn_and_model, tmp_path):
    cnn, model = cnn_and_model
    InferenceOptimizer.save(model, str(tmp_path / "m"))
    x = torch.rand(3, 1, 8, 8)
    torch.save({"state": cnn.state_dict(), "x": x, "want": cnn(x).detach()}, tmp_path / "io.pt")
    script = f"""
import torch
from nano import InferenceOptimizer
from tests.inference.models import SmallCNN
io = torch.load({str(tmp_path / 'io.pt')!r})
cnn = SmallCNN().eval()
cnn.load_state_dict(io["state"])
loaded = InferenceOptimizer.load({str(tmp_path / 'm')!r}, model=cnn)
print(type(loaded).__name__, loaded.method.name)
torch.testing.assert_close(loaded(io["x"]), io["want"], rtol=1e-4, atol=1e-5)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["OpenVINOCompiledModel", "openvino_compile_fp32"]


def test_load_without_the_model_says_to_pass_it(cnn_and_model, tmp_path):
    from nano.runtimes.model_files import ModelLoadError

    InferenceOptimizer.save(cnn_and_model[1], str(tmp_path / "m"))
    with pytest.raises(ModelLoadError, match="pass the original module"):
        InferenceOptimizer.load(str(tmp_path / "m"))


def test_traced_without_a_sample_compiles_on_first_call():
    torch.manual_seed(1)
    cnn = SmallCNN().eval()
    model = InferenceOptimizer.trace(cnn, accelerator="openvino_compile")
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model(x), cnn(x), rtol=1e-4, atol=1e-5)


def test_bf16_is_refused_with_the_reason():
    with pytest.raises(MissingDependency, match="openvino_compile builds fp32 here, not bf16"):
        InferenceOptimizer.quantize(SmallCNN().eval(), precision="bf16",
                                    accelerator="openvino_compile",
                                    input_sample=torch.rand(2, 1, 8, 8))


def test_it_is_a_row_of_optimize():
    torch.manual_seed(2)
    cnn = SmallCNN().eval()
    data = [(torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)) for _ in range(4)]
    opt = InferenceOptimizer()
    opt.optimize(cnn, data, includes=["openvino_compile_fp32"], latency_sample_num=10)
    row = {r["method"]: r for r in opt.records()}["openvino_compile_fp32"]
    assert row["status"] == "ok", row
    best = opt.get_model("openvino_compile_fp32")
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(best(x), cnn(x), rtol=1e-4, atol=1e-5)
