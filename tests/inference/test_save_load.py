"""save()/load(): self-describing directories that load in a fresh process without the class."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from nano import InferenceOptimizer
from nano.runtimes.model_files import ModelLoadError
from tests.inference.models import SmallCNN, TwoInput

GRAPH_KINDS = ["jit", "onnxruntime", "openvino"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each graph kind of TwoInput saved, plus the input and the expected output."""
    torch.manual_seed(0)
    model = TwoInput().eval()
    x, e = torch.rand(3, 6), torch.rand(3, 3)
    root = tmp_path_factory.mktemp("saved")
    for kind in GRAPH_KINDS:
        traced = InferenceOptimizer.trace(model, accelerator=kind,
                                          input_sample=((x[:1],), {"extra": e[:1]}))
        InferenceOptimizer.save(traced, str(root / kind))
    torch.save({"x": x, "e": e, "expected": model(x, extra=e)}, root / "io.pt")
    return root


@pytest.mark.slow
def test_graph_kinds_load_in_a_fresh_process_without_the_class(saved):
    script = textwrap.dedent(f"""
        import sys, torch
        from nano import InferenceOptimizer
        io = torch.load({str(saved / 'io.pt')!r})
        assert "tests" not in sys.modules
        for kind in {GRAPH_KINDS!r}:
            model = InferenceOptimizer.load({str(saved)!r} + "/" + kind)
            out = model(io["x"], extra=io["e"])
            assert isinstance(out, tuple) and len(out) == 2, kind
            for a, b in zip(out, io["expected"]):
                assert torch.allclose(a, b, atol=1e-5), kind
            print("OK", kind)
    """)
    env = dict(os.environ, PYTHONPATH="")  # the tests package is not importable there
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env=env, cwd="/")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["OK", "jit", "OK", "onnxruntime", "OK", "openvino"]


def test_standard_artifacts_are_written(saved):
    assert (saved / "jit" / "model.pt").exists()
    assert (saved / "onnxruntime" / "model.onnx").exists()
    assert (saved / "openvino" / "model.xml").exists() and (saved / "openvino" / "model.bin").exists()
    meta = json.loads((saved / "onnxruntime" / "nano_model.json").read_text())
    assert meta["method_name"] == "onnxruntime_fp32" and "model.onnx" in meta["files"]


def test_onnx_artifact_runs_in_plain_onnxruntime(saved):
    import onnxruntime as ort

    io = torch.load(saved / "io.pt")
    sess = ort.InferenceSession(str(saved / "onnxruntime" / "model.onnx"))
    out = sess.run(None, {"x": io["x"].numpy(), "extra": io["e"].numpy()})
    assert torch.allclose(torch.from_numpy(out[0]), io["expected"][0], atol=1e-5)


def test_state_dict_kinds_need_the_model(tmp_path):
    torch.manual_seed(0)
    cnn = SmallCNN().eval()
    x = torch.rand(2, 1, 8, 8)
    model = InferenceOptimizer.trace(cnn, input_sample=x, channels_last=True)
    InferenceOptimizer.save(model, str(tmp_path / "eager"))
    with pytest.raises(ModelLoadError, match="pass the original module"):
        InferenceOptimizer.load(str(tmp_path / "eager"))
    loaded = InferenceOptimizer.load(str(tmp_path / "eager"), model=SmallCNN())
    assert torch.allclose(loaded(x), cnn(x), atol=1e-5)


def copy_dir(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_corrupted_file_is_refused(saved, tmp_path):
    d = copy_dir(saved / "onnxruntime", tmp_path / "m")
    data = bytearray((d / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="corrupted: model.onnx"):
        InferenceOptimizer.load(str(d))


def test_partial_directory_is_refused(saved, tmp_path):
    d = copy_dir(saved / "openvino", tmp_path / "m")
    (d / "model.bin").unlink()
    with pytest.raises(ModelLoadError, match="incomplete: model.bin is missing"):
        InferenceOptimizer.load(str(d))
    (d / "nano_model.json").unlink()
    with pytest.raises(ModelLoadError, match="nano_model.json is missing"):
        InferenceOptimizer.load(str(d))


def test_garbled_metadata_is_refused(saved, tmp_path):
    d = copy_dir(saved / "jit", tmp_path / "m")
    (d / "nano_model.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="corrupted"):
        InferenceOptimizer.load(str(d))


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="not a directory"):
        InferenceOptimizer.load(str(tmp_path / "nope"))


def test_save_takes_plain_modules_and_rejects_other_objects(tmp_path):
    cnn = SmallCNN().eval()
    InferenceOptimizer.save(cnn, str(tmp_path / "x"))  # saved as an "original" model
    loaded = InferenceOptimizer.load(str(tmp_path / "x"), model=SmallCNN())
    assert loaded.method.name == "original"
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded(x), cnn(x))
    with pytest.raises(TypeError, match="save\\(\\) takes a model returned by Nano or an "
                                        "nn.Module, got function"):
        InferenceOptimizer.save(lambda x: x, str(tmp_path / "y"))
