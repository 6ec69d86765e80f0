"""Static INT8 is right on every x86 CPU: 7-bit weights where there is no int8 dot product.

Without VNNI/AMX, x86 INT8 kernels add pairs of u8 x s8 products in 16 bits and saturate:
8-bit INT8 of a model with wide activations was 0.14-0.20 off (relative L2) under AVX2.
These tests state what each kind must do. Marked ``emulated`` too: on a host with an int8
dot product, scripts/test-emulated.sh runs them again as an AVX2 CPU under QEMU.
"""

import os
import subprocess
import sys

import pytest
import torch

from nano import InferenceOptimizer
from nano.runtimes.int8_overflow import EIGHT_BIT, SEVEN_BIT
from nano.launcher.capability import current
from tests.fresh_process import ROOT, check_in_fresh_process, python_command

pytestmark = [pytest.mark.slow, pytest.mark.emulated]

# accelerator, method: every static INT8 builder (PT2E is accelerator None), and the dynamic
# ones of ORT and PT2E, whose kernels take u8 activations too
BUILDERS = [("onnxruntime", "qdq"), ("onnxruntime", "qlinear"), ("onnxruntime", "integer"),
            ("openvino", None), (None, None), (None, "dynamic")]
# relative L2 on fresh values: measured 0.010-0.028 with the workaround under AVX2,
# 0.011-0.018 with 8 bits on AMX; 0.14-0.20 when AVX2 ran 8-bit weights
LIMIT = 0.05
# drops every feature that gives an int8 dot product: Nano then decides as on AVX2
NO_INT8_DOT = "avx512f avx_vnni amx_int8"


class WideMLP(torch.nn.Module):
    """Two layers reading activations far from unit scale: the case that saturates."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(64, 128)
        self.b = torch.nn.Linear(128, 16)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _data(seed, n=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 64, generator=g) * 8 for _ in range(n)]


def _model():
    torch.manual_seed(0)
    return WideMLP().eval()


def _rel(got, want):
    return ((got - want).norm() / want.norm()).item()


def _quantize(model, accelerator, method):
    dynamic = method in ("integer", "dynamic")
    return InferenceOptimizer.quantize(model, accelerator=accelerator,
                                       method=None if method == "dynamic" else method,
                                       approach="dynamic" if dynamic else "static",
                                       calib_data=_data(1))


@pytest.mark.parametrize("accelerator,method", BUILDERS,
                         ids=[f"{a}-{m}" for a, m in BUILDERS])
def test_int8_of_wide_activations_is_right_here_and_after_a_fresh_load(accelerator, method,
                                                                       tmp_path):
    model = _model()
    fast = _quantize(model, accelerator, method)
    assert fast.int8_scheme == (SEVEN_BIT if current().int8_saturates else EIGHT_BIT)
    fresh = _data(99, 1)[0] * 1.3  # values calibration never saw
    with torch.no_grad():
        want = model(fresh)
    got = fast(fresh)
    assert _rel(got, want) < LIMIT, f"{fast.method.name} on {current().kind}: {_rel(got, want)}"
    InferenceOptimizer.save(fast, str(tmp_path / "int8"))
    check_in_fresh_process(str(tmp_path / "int8"), (fresh,), got, str(tmp_path))


def test_optimize_builds_int8_for_the_cpu_it_runs_on_and_keeps_it(tmp_path):
    """optimize() builds each candidate in a child process: the children see the caller's
    CPU (under scripts/test-emulated.sh, the emulated one), so the INT8 rows are built for
    it, pass the judgement and are right on fresh values."""
    model = _model()
    methods = ["onnxruntime_int8_qdq", "openvino_int8"]
    opt = InferenceOptimizer()
    opt.optimize(model, _data(1), validation_data=_data(2, 4), includes=methods,
                 latency_sample_num=10, latency_budget=1, early_stop_factor=None,
                 accuracy="rel_l2", search_mode="all")
    rows = {r.name: r for r in opt.results}
    fresh = _data(99, 1)[0] * 1.3
    with torch.no_grad():
        want = model(fresh)
    for name in methods:
        assert rows[name].status == "ok", (name, rows[name].status, rows[name].detail)
        fast = opt.get_model(name)
        assert fast.int8_scheme == (SEVEN_BIT if current().int8_saturates else EIGHT_BIT)
        assert _rel(fast(fresh), want) < LIMIT, (name, current().kind, _rel(fast(fresh), want))
    best, _ = opt.get_best_model(precision="int8")
    InferenceOptimizer.save(best, str(tmp_path / "best"))
    check_in_fresh_process(str(tmp_path / "best"), (fresh,), best(fresh), str(tmp_path))


def _load_in_fresh_process(saved, env):
    script = ("import warnings, torch\nfrom nano import InferenceOptimizer\n"
              "warnings.simplefilter('always')\n"
              f"m = InferenceOptimizer.load({saved!r})\nm(torch.randn(2, 64))\n"
              f"InferenceOptimizer.load({saved!r})\n")
    done = subprocess.run([*python_command(), "-c", script], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **env}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if "RuntimeWarning" in line]


def test_an_8_bit_model_loaded_where_it_saturates_warns_once(tmp_path):
    """A model built on a VNNI machine (8-bit, as it records) is refused silence on a CPU
    without an int8 dot product; a 7-bit one, or the same CPU kind, loads quietly."""
    fast = _quantize(_model(), "onnxruntime", "qdq")
    fast.int8_scheme = EIGHT_BIT  # what a build on a CPU with an int8 dot product records
    fast.built_on = {"arch": "x86_64", "int8_dot": "AVX512-VNNI", "vector": "AVX-512"}
    InferenceOptimizer.save(fast, str(tmp_path / "vnni"))
    warned = _load_in_fresh_process(str(tmp_path / "vnni"), {"NANO_CPU_IGNORE": NO_INT8_DOT})
    assert len(warned) == 1, warned  # twice loaded, warned once
    assert "built for a CPU with an int8 dot product (avx512_vnni)" in warned[0]
    assert "re-quantize it here" in warned[0]
    if not current().int8_saturates:
        assert _load_in_fresh_process(str(tmp_path / "vnni"), {}) == []
    fast.int8_scheme = SEVEN_BIT
    InferenceOptimizer.save(fast, str(tmp_path / "avx2"))
    assert _load_in_fresh_process(str(tmp_path / "avx2"), {"NANO_CPU_IGNORE": NO_INT8_DOT}) == []


def test_a_model_built_on_the_host_is_detected_and_wrong_under_emulation(tmp_path):
    """Run by scripts/test-emulated.sh: the host (int8 dot product) builds and saves an 8-bit
    model; loaded here, as an AVX2 CPU, it warns, and it really is off by saturation."""
    if not os.environ.get("NANO_TEST_EMULATOR"):
        pytest.skip("needs the host and an emulated CPU: scripts/test-emulated.sh runs it")
    saved = str(tmp_path / "host")
    script = ("import torch\nfrom nano import InferenceOptimizer\n"
              "from tests.inference.test_int8_by_cpu import _data, _model\n"
              "m = InferenceOptimizer.quantize(_model(), accelerator='onnxruntime', "
              "calib_data=_data(1))\n"
              f"assert m.int8_scheme == '8-bit', m.int8_scheme\n"
              f"InferenceOptimizer.save(m, {saved!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)  # sys.executable alone runs on the host
    assert done.returncode == 0, done.stderr[-2000:]
    with pytest.warns(RuntimeWarning, match="re-quantize it here"):
        loaded = InferenceOptimizer.load(saved)
    fresh = _data(99, 1)[0]
    with torch.no_grad():
        want = _model()(fresh)
    assert _rel(loaded(fresh), want) > 2 * LIMIT  # what the warning is about
