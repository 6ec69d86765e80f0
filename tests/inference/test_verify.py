"""The fresh-values check that every conversion passes before Nano returns it."""

import pytest
import torch

from nano.errors import TraceError
from nano.runtimes.prepare import prepare
from nano.runtimes.verify import check_conversion


def _inputs():
    torch.manual_seed(0)
    return prepare(torch.nn.Linear(4, 3).eval(), torch.randn(2, 4))


def test_a_right_conversion_passes():
    inputs = _inputs()
    check_conversion(lambda x: inputs.model(x), inputs, "fp32", "the copy")


def test_outputs_over_a_reused_buffer_are_refused():
    """A runtime that returns tensors over its own output buffer is right call by call, but
    outputs a caller keeps (a list of predictions) all become the last one."""
    inputs = _inputs()
    buffers: dict = {}

    def reuses_its_buffer(x):
        out = inputs.model(x)
        buf = buffers.setdefault(tuple(out.shape), torch.empty_like(out))
        buf.copy_(out)
        return buf

    with pytest.raises(TraceError, match="do not stay as returned: the next call overwrote"):
        check_conversion(reuses_its_buffer, inputs, "fp32", "the buffered runtime")


def test_a_wrong_conversion_is_refused():
    inputs = _inputs()
    with pytest.raises(TraceError, match="on an input unlike the traced sample"):
        check_conversion(lambda x: inputs.model(x) + 1, inputs, "fp32", "the off-by-one")
