"""bf16 by what the processor has: left out of optimize() where it is emulated, run with one
warning line when asked for by name, on every runtime alike."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

from nano import InferenceOptimizer
from nano.launcher import capability
from tests.fresh_process import ROOT

NO_BF16 = "avx512_bf16 amx_bf16 avx512_fp16 amx_fp16"


@pytest.fixture
def without_bf16(monkeypatch):
    """Nano decides as on a CPU without native bf16/fp16 (AVX2, or AVX-512 before Zen 4)."""
    monkeypatch.setenv("NANO_CPU_IGNORE", NO_BF16)
    capability.current.cache_clear()
    yield
    capability.current.cache_clear()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, 4)).eval()


@pytest.mark.slow
@pytest.mark.parametrize("accelerator,how", [(None, "emulated"), ("jit", "emulated"),
                                             ("openvino", "computes in f32")])
def test_bf16_asked_for_by_name_runs_with_one_warning_line(without_bf16, accelerator, how):
    model, x = _model(), torch.randn(4, 8)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fast = InferenceOptimizer.quantize(model, accelerator=accelerator, precision="bf16",
                                        input_sample=x)
    ours = [w for w in seen if issubclass(w.category, RuntimeWarning)
            and "no native bf16" in str(w.message)]
    assert len(ours) == 1 and "\n" not in str(ours[0].message), [str(w.message) for w in seen]
    assert how in str(ours[0].message)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=0.05, atol=0.05)


def test_a_native_bf16_build_says_nothing():
    if not capability.current().native("bf16"):
        pytest.skip("this CPU has no native bf16: the test above is what it must do")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        InferenceOptimizer.quantize(_model(), precision="bf16", input_sample=torch.randn(2, 8))


@pytest.mark.slow
def test_optimize_leaves_emulated_bf16_out_with_a_row_saying_why():
    """Each kind of CPU: bf16 tried where native, a skipped row naming the CPU elsewhere."""
    code = """
import json, torch
from nano import InferenceOptimizer
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
opt = InferenceOptimizer()
opt.optimize(model.eval(), [(torch.randn(4, 8),) for _ in range(4)], accelerator=[None],
             precision=["fp32", "bf16"], latency_sample_num=5, latency_budget=0.5)
print(json.dumps({r.name: [r.status, r.detail] for r in opt.results}))
"""
    for ignore, native in ((NO_BF16, False), ("", capability.current().native("bf16"))):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=ROOT, env={**os.environ, "NANO_CPU_IGNORE": ignore},
                             timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        rows = __import__("json").loads(out.stdout.splitlines()[-1])
        status, detail = rows["bf16"]
        if native:
            assert "no native bf16" not in detail, rows
        else:
            assert status == "skipped" and "this CPU has no native bf16" in detail, rows
            assert "includes=" in detail
