"""Saved models: complete, checksummed, atomic; a damaged or inconsistent directory is refused."""

import json
import os
import subprocess
import sys

import pytest
import torch

from nano import InferenceOptimizer
from nano.errors import NanoValueError
from nano.runtimes.model_files import META_FILE, ModelLoadError
from tests.fresh_process import ROOT


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
                               torch.nn.Linear(8, 2)).eval()


def _flip_byte(path, offset=-5):
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0x01
    open(path, "wb").write(bytes(data))


def _meta(directory):
    with open(os.path.join(directory, META_FILE)) as f:
        return json.load(f)


def _write_meta(directory, meta):
    """Metadata written consistently (its own checksum renewed), as by a tool that gets the
    rest wrong: the checks past the checksum must catch it."""
    from nano.runtimes.model_files import META_CHECKSUM, metadata_digest

    meta = {**meta, META_CHECKSUM: metadata_digest(meta)}
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f)


def _siblings(directory):
    parent = os.path.dirname(str(directory))
    return sorted(n for n in os.listdir(parent) if n != os.path.basename(str(directory)))


def test_second_save_into_the_same_directory_replaces_the_first(tmp_path):
    model, x = _model(), torch.randn(3, 4)
    target = tmp_path / "d"
    InferenceOptimizer.save(model, str(target))  # an 'original' model: state_dict.pt
    jit = InferenceOptimizer.trace(model, accelerator="jit", input_sample=x)
    InferenceOptimizer.save(jit, str(target))
    meta = _meta(target)
    assert sorted(meta["files"]) == ["model.pt"], meta["files"]
    assert sorted(os.listdir(target)) == ["model.pt", META_FILE]  # the first model's files went
    assert _siblings(target) == []  # no staging or old directory left next to it
    loaded = InferenceOptimizer.load(str(target))
    torch.testing.assert_close(loaded(x), model(x))
    _flip_byte(target / "model.pt")
    with pytest.raises(ModelLoadError, match="model.pt does not match its checksum"):
        InferenceOptimizer.load(str(target))


@pytest.mark.slow
def test_onnxruntime_then_openvino_into_the_same_directory(tmp_path):
    """The issue's case: after the second save one flipped byte must be caught."""
    model, x = _model(), torch.randn(3, 4)
    target = str(tmp_path / "d")
    InferenceOptimizer.save(InferenceOptimizer.trace(model, accelerator="onnxruntime",
                                                     input_sample=x), target)
    InferenceOptimizer.save(InferenceOptimizer.trace(model, accelerator="openvino",
                                                     input_sample=x), target)
    assert sorted(_meta(target)["files"]) == ["model.bin", "model.xml"]
    assert "model.onnx" not in os.listdir(target)
    _flip_byte(os.path.join(target, "model.bin"), 10)
    with pytest.raises(ModelLoadError, match="model.bin does not match its checksum"):
        InferenceOptimizer.load(target)


def test_an_interrupted_save_keeps_the_previous_model(tmp_path, monkeypatch):
    model, x = _model(), torch.randn(3, 4)
    target = tmp_path / "d"
    jit = InferenceOptimizer.trace(model, accelerator="jit", input_sample=x)
    InferenceOptimizer.save(jit, str(target))
    before = sorted(os.listdir(target))

    def interrupted(self, directory):
        open(os.path.join(directory, "state_dict.pt"), "wb").write(b"half")
        raise KeyboardInterrupt

    from nano.runtimes.backends.torch_eager import EagerModel

    monkeypatch.setattr(EagerModel, "save_artifacts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        InferenceOptimizer.save(model, str(target))
    assert sorted(os.listdir(target)) == before
    assert _siblings(target) == []
    torch.testing.assert_close(InferenceOptimizer.load(str(target))(x), model(x))


@pytest.mark.parametrize("damage", ["no checksums", "unlisted file"])
def test_load_refuses_files_without_checksums(tmp_path, damage):
    model, x = _model(), torch.randn(3, 4)
    target = str(tmp_path / "d")
    InferenceOptimizer.save(InferenceOptimizer.trace(model, accelerator="jit", input_sample=x),
                            target)
    if damage == "no checksums":
        meta = _meta(target)
        meta["files"] = {}
        _write_meta(target, meta)
    else:
        open(os.path.join(target, "model.onnx"), "wb").write(b"\0" * 10)
    with pytest.raises(ModelLoadError, match="cannot be verified"):
        InferenceOptimizer.load(target)


def test_metadata_naming_another_accelerator_is_a_load_error(tmp_path):
    model, x = _model(), torch.randn(3, 4)
    target = str(tmp_path / "d")
    InferenceOptimizer.save(InferenceOptimizer.trace(model, accelerator="jit", input_sample=x),
                            target)
    meta = _meta(target)
    meta["accelerator"] = meta["method"]["accelerator"] = "openvino"
    meta["method_name"] = "openvino_fp32"
    _write_meta(target, meta)
    with pytest.raises(ModelLoadError) as info:
        InferenceOptimizer.load(target)
    assert "'openvino'" in str(info.value) and "model.pt" in str(info.value)
    assert "\n" not in str(info.value)


def test_save_refuses_to_replace_what_is_not_a_nano_model(tmp_path):
    model = _model()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(NanoValueError, match="not a saved Nano model"):
        InferenceOptimizer.save(model, str(mine))
    assert (mine / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NanoValueError, match="is a file"):
        InferenceOptimizer.save(model, str(a_file))
    with pytest.raises(NanoValueError, match="is a file, not a directory"):
        InferenceOptimizer.save(model, str(a_file / "sub"))


_SAVE_AND_LOAD = """
import sys, torch
from nano import InferenceOptimizer
target, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    InferenceOptimizer.save(torch.nn.Linear(4, 3), target)
    InferenceOptimizer.load(target, model=torch.nn.Linear(4, 3))
"""


@pytest.mark.slow
def test_concurrent_saves_and_loads_into_one_directory(tmp_path):
    """3 processes saving and loading one path: raw FileNotFoundError / 'Directory not empty',
    loads of half-swapped models and leftover .old copies before. Saves take turns swapping
    (an flock on the parent, no lock file) and each swap is one step."""
    target = tmp_path / "model"
    procs = [subprocess.Popen([sys.executable, "-c", _SAVE_AND_LOAD, str(target), "120"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(3)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(errors)[-3000:]
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no staging or old copies left
    InferenceOptimizer.load(str(target), model=torch.nn.Linear(4, 3))


def test_saving_into_a_symlink_follows_it(tmp_path):
    """The link stays a link and the model goes where it points; nothing else is left."""
    real = tmp_path / "store" / "model"
    real.parent.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    model = _model()
    InferenceOptimizer.save(model, str(link))
    InferenceOptimizer.save(model, str(link))  # a second save replaces it through the link
    assert link.is_symlink() and os.path.realpath(link) == str(real)
    assert sorted(os.listdir(tmp_path)) == ["link", "store"]
    assert sorted(os.listdir(real.parent)) == ["model"]
    InferenceOptimizer.load(str(link), model=_model())
