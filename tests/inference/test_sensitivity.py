"""Which layers cost the most accuracy in INT8 (the measured step of the INT8 ladder)."""

import pytest
import torch
from torch import nn

from nano.runtimes import sensitivity
from nano.search.judgement import HeldOut, OutputJudgement
from tests.inference.test_int8_ladder import OutlierInside


def _held(model, batches=4, **metric):
    torch.manual_seed(1)
    samples = [((torch.randn(16, 16),), {}) for _ in range(batches)]
    with torch.no_grad():
        refs = [model(*args) for args, _ in samples]
    return HeldOut(samples, refs, OutputJudgement.decide(model, refs[0], "rel_l2"), **metric)


def test_the_layer_reading_an_outlier_costs_the_most():
    model = OutlierInside().eval()
    held = _held(model)
    calib = [((torch.randn(16, 16),), {}) for _ in range(4)]
    costs = sensitivity.layer_costs(model, calib, held)
    assert [name for name, _ in costs][0] == "layers.1"  # its input has the 1000 unit
    assert len(costs) == 4 and costs[0][1] > 1 > costs[-1][1]
    # the model is left as it was
    assert torch.equal(model(held.samples[0][0][0]), held.references[0])


def test_simulated_int8_rounds_to_256_levels_over_the_range():
    x = torch.linspace(-1, 3, 1000)
    for symmetric in (True, False):
        q = sensitivity.fake_quantize_activation(x, -1.0, 3.0, symmetric)
        assert len(q.unique()) <= 256
        assert (q - x).abs().max() <= (3.0 / 127 if symmetric else 4.0 / 255)
    w = torch.randn(8, 3, 3, 3)
    qw = sensitivity.fake_quantize_weight(w)
    step = w.reshape(8, -1).abs().amax(1) / 127
    assert ((qw - w).reshape(8, -1).abs().amax(1) <= step / 2 + 1e-7).all()


def test_kept_counts_double_up_to_the_most_and_never_keep_every_layer():
    assert sensitivity.kept_counts(36, 8) == [1, 2, 4, 8]
    assert sensitivity.kept_counts(4, 8) == [1, 2]
    assert sensitivity.kept_counts(1, 8) == []


def test_keep_costliest_stops_at_the_first_passing_build():
    model = OutlierInside().eval()
    held = _held(model)
    calib = [((torch.randn(16, 16),), {}) for _ in range(4)]
    asked = []

    def build(layers):
        asked.append(list(layers))
        return model if "layers.1" in layers else (lambda x: torch.zeros_like(model(x)))

    assert sensitivity.keep_costliest(model, calib, held, True, build) is model
    assert asked == [["layers.1"]]
    with pytest.raises(RuntimeError, match="has 1 such layer"):
        sensitivity.keep_costliest(nn.Linear(16, 8).eval(), calib, _held(nn.Linear(16, 8)),
                                   True, build)


def test_held_out_accepts_by_the_metric_and_criterion_when_there_is_one():
    model = nn.Linear(16, 4).eval()

    def accuracy(pred, target):
        return (pred.argmax(-1) == target).float().mean()

    held = _held(model)
    targets = [r.argmax(-1) for r in held.references]  # the original scores 1.0
    held = _held(model, metric=accuracy, targets=targets, max_drop=0.1, drop_type="absolute")
    assert held.accepts(held.references)
    # other outputs with the same classes: the metric is what counts, not the judgement
    assert held.accepts([r * 2 + 5 for r in held.references])
    assert not held.accepts([torch.nn.functional.one_hot((t + 1) % 4, 4).float()
                             for t in targets])


@pytest.mark.slow
def test_onnx_nodes_are_found_by_the_layer_they_come_from(tmp_path):
    from nano.runtimes.backends.onnxruntime_fp32 import export_onnx
    from nano.runtimes.backends.onnxruntime_int8 import layer_nodes
    from nano.runtimes.prepare import prepare

    path = str(tmp_path / "m.onnx")
    export_onnx(prepare(OutlierInside().eval(), torch.randn(4, 16)), path)
    nodes = layer_nodes(path)
    assert sorted(nodes) == ["layers.0", "layers.1", "layers.2", "layers.3"]
    assert all(len(names) == 1 for names in nodes.values())
