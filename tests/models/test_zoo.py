"""The model zoo: every family builds, its output depends on its input, and (slow)
a converting runtime and an INT8 runtime compute the same thing on fresh inputs."""

import pytest
import torch

from nano.runtimes.structure import flatten_output
from nano.models.zoo import ZOO, build

AVAILABLE = [name for name, entry in ZOO.items() if entry.unavailable_reason() is None]


def rel_l2(got, want) -> float:
    pairs = list(zip(flatten_output(got), flatten_output(want)))
    assert pairs and len(flatten_output(got)) == len(flatten_output(want))
    return max(((a.float() - b.float()).norm() / b.float().norm()).item() for a, b in pairs)


def test_the_zoo_covers_the_families_users_bring():
    assert len(ZOO) >= 12
    assert {e.family for e in ZOO.values()} == {"cnn", "transformer", "recurrent", "recommender"}
    with pytest.raises(KeyError, match="no zoo model 'resnet'; the zoo: resnet18, "):
        build("resnet")


@pytest.mark.parametrize("name", AVAILABLE)
def test_each_model_builds_and_its_output_depends_on_its_input(name):
    model, sample = build(name, batch=2)
    assert not model.training
    other = ZOO[name].sample(2)
    with torch.no_grad():
        a, b = model(*sample), model(*other)
        again = build(name, batch=2)[0](*sample)
    # a model whose output ignores its input would pass any runtime's check
    assert rel_l2(a, b) > 1e-2, "output hardly depends on the input"
    assert rel_l2(again, a) == 0.0  # the same weights each time


@pytest.mark.slow
@pytest.mark.parametrize("name", AVAILABLE)
def test_onnx_runtime_and_openvino_int8_on_fresh_inputs(name):
    from nano import InferenceOptimizer

    model, sample = build(name, batch=2)
    fresh = ZOO[name].sample(3)  # other values and another batch size than the trace's
    with torch.no_grad():
        want = model(*fresh)
        fp32 = InferenceOptimizer.trace(model, accelerator="onnxruntime", input_sample=sample)
        assert rel_l2(fp32(*fresh), want) < 1e-4
        int8 = InferenceOptimizer.quantize(model, accelerator="openvino", precision="int8",
                                           calib_data=[ZOO[name].sample(2) for _ in range(8)],
                                           input_sample=sample)
        # random weights quantize badly (a random MobileNet-style net: 0.37); a wrong graph
        # is above 1
        assert rel_l2(int8(*fresh), want) < 0.5
        if ZOO[name].task is not None:  # a trained classifier keeps its classes
            many = ZOO[name].sample(32)
            agree = (int8(*many).argmax(-1) == model(*many).argmax(-1)).float().mean().item()
            assert agree >= 0.9, f"INT8 top-1 agreement {agree:.3f}"
