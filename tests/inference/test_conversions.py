"""One ONNX export and one OpenVINO conversion per search, shared by the candidates that
need them, each checked once and stored only after its check."""

import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nano import InferenceOptimizer
from nano.runtimes.backends import onnxruntime_fp32, openvino_ir
from nano.runtimes.prepare import prepare
from tests.inference.models import SmallCNN

pytestmark = pytest.mark.slow


def _inputs(cache):
    torch.manual_seed(0)
    inputs = prepare(SmallCNN().eval(), torch.rand(2, 1, 8, 8))
    inputs.conversion_cache = str(cache)
    return inputs


def test_a_second_build_reuses_the_checked_export(tmp_path, monkeypatch):
    calls = {"export": 0, "convert": 0}
    export, convert = onnxruntime_fp32._export, openvino_ir._convert_module

    def counted_export(*a):
        calls["export"] += 1
        return export(*a)

    def counted_convert(*a):
        calls["convert"] += 1
        return convert(*a)

    monkeypatch.setattr(onnxruntime_fp32, "_export", counted_export)
    monkeypatch.setattr(openvino_ir, "_convert_module", counted_convert)
    for i in range(2):
        inputs = _inputs(tmp_path / "cache")
        onnxruntime_fp32.export_onnx(inputs, str(tmp_path / f"m{i}.onnx"))
        openvino_ir.convert(inputs)
    assert calls == {"export": 1, "convert": 1}
    kept = os.listdir(tmp_path / "cache")
    assert not [f for f in kept if f.endswith(".partial")]
    # .onnx, .xml and .bin, and the control-flow probe's answer (OpenVINO asked it)
    assert sorted(f.split("-")[0] for f in kept) == [
        "control_flow", "onnx_fp32", "openvino", "openvino"]
    assert (tmp_path / "m0.onnx").read_bytes() == (tmp_path / "m1.onnx").read_bytes()


def test_a_conversion_that_fails_its_check_is_not_stored(tmp_path, monkeypatch):
    from nano.errors import TraceError
    from nano.runtimes import verify

    def refuse(*a, **k):
        raise TraceError("differs")

    monkeypatch.setattr(verify, "check_conversion", refuse)
    with pytest.raises(TraceError):
        onnxruntime_fp32.export_onnx(_inputs(tmp_path / "cache"), str(tmp_path / "m.onnx"))
    assert not os.path.exists(tmp_path / "cache") or os.listdir(tmp_path / "cache") == []


def test_optimize_converts_once_per_runtime_and_stays_right():
    torch.manual_seed(0)
    model = SmallCNN().eval()
    data = DataLoader(TensorDataset(torch.rand(16, 1, 8, 8)), batch_size=4)
    opt = InferenceOptimizer()
    opt.optimize(model, data, includes=["onnxruntime_fp32", "onnxruntime_int8_qdq",
                                        "openvino_fp32", "openvino_bf16", "openvino_int8"],
                 latency_sample_num=5, latency_budget=1, final_round=False,
                 early_stop_factor=None)
    rows = {r.name: r for r in opt.results}
    assert all(r.status == "ok" for r in rows.values()), {n: r.detail for n, r in rows.items()}
    cache = os.path.join(opt._search.workdir.name, "conversions")
    # one conversion per runtime, plus the small answers every build shares (.txt, .json)
    assert sorted(os.path.splitext(f)[1] for f in os.listdir(cache)
                  if not f.startswith(("control_flow-", "index_bounds-"))) == [
        ".bin", ".onnx", ".xml"]
    x = torch.rand(3, 1, 8, 8)
    for name, tol in (("onnxruntime_int8_qdq", 0.2), ("openvino_bf16", 0.05),
                      ("openvino_int8", 0.2)):
        got, want = opt.get_model(name)(x), model(x)
        assert ((got - want).norm() / want.norm()).item() < tol, name
