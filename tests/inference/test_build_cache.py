"""The on-disk build cache: a second optimize() of the same model reuses built candidates, a
changed model does not, and a damaged entry is rebuilt, never used."""

import os

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from nano import InferenceOptimizer
from nano.errors import NanoValueError
from nano.search.build_cache import model_key
from tests.inference.models import SmallCNN

CACHED = ["onnxruntime_fp32", "openvino_fp32", "onnxruntime_int8_qdq"]


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.rand(16, 1, 8, 8, generator=g)), batch_size=4)


def _search(model, cache_dir, **kwargs):
    opt = InferenceOptimizer()
    opt.optimize(model, _data(), includes=CACHED, latency_sample_num=5, latency_budget=1,
                 final_round=False, early_stop_factor=None, cache_dir=str(cache_dir),
                 accuracy="rel_l2", **kwargs)  # random weights: logits nearly tied
    return opt, {r.name: r for r in opt.results}


def _close(opt, model, name, tol):
    x = torch.rand(3, 1, 8, 8)  # fresh values, another batch size
    got, want = opt.get_model(name)(x), model(x)
    assert ((got - want).norm() / want.norm()).item() < tol, name


@pytest.mark.slow
def test_second_search_reuses_and_a_damaged_entry_is_rebuilt(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    _, first = _search(model, tmp_path)
    assert all(first[n].status == "ok" and "build cache" not in first[n].detail for n in CACHED)
    opt, second = _search(model, tmp_path)
    for name in CACHED:
        assert second[name].status == "ok"
        assert second[name].detail == "built earlier: loaded from the build cache", name
        assert second[name].build_seconds < first[name].build_seconds, name
        _close(opt, model, name, 0.2 if "int8" in name else 1e-4)

    # flip a byte of a cached ONNX file: its checksum fails, the entry is built again
    [entry] = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path) for f in fs
               if f == "model.onnx" and "onnxruntime_fp32" in r]
    data = bytearray(open(entry, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(entry, "wb").write(bytes(data))
    opt, third = _search(model, tmp_path)
    assert third["onnxruntime_fp32"].status == "ok"
    assert "build cache" not in third["onnxruntime_fp32"].detail
    _close(opt, model, "onnxruntime_fp32", 1e-4)
    _, fourth = _search(model, tmp_path)  # and stored again
    assert "build cache" in fourth["onnxruntime_fp32"].detail

    # other weights are another model: nothing is reused
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    opt, changed = _search(model, tmp_path)
    assert all("build cache" not in changed[n].detail for n in CACHED)
    _close(opt, model, "onnxruntime_fp32", 1e-4)


@pytest.mark.slow
def test_no_cache_writes_nothing(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    _search(model, tmp_path / "a", no_cache=True)
    assert not (tmp_path / "a").exists()
    monkeypatch.setenv("NANO_CACHE_DIR", "off")
    opt = InferenceOptimizer()
    opt.optimize(model, _data(), includes=["onnxruntime_fp32"], latency_sample_num=5,
                 latency_budget=1, final_round=False)
    assert opt.results[1].status == "ok"


def test_an_unwritable_cache_dir_is_refused_first(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NanoValueError, match="cache_dir .* cannot be written"):
        InferenceOptimizer().optimize(torch.nn.Linear(2, 2), torch.randn(4, 2),
                                      cache_dir=str(blocker / "cache"))


def test_the_key_follows_what_a_build_depends_on():
    torch.manual_seed(0)
    model, twin = SmallCNN().eval(), SmallCNN().eval()
    twin.load_state_dict(model.state_dict())
    sample = ((torch.rand(2, 1, 8, 8),), {})
    calib = [((torch.rand(2, 1, 8, 8),), {})]
    key = model_key(model, sample, True, calib)
    assert model_key(twin, sample, True, calib) == key  # same weights and code
    assert model_key(twin, ((torch.rand(2, 1, 8, 8),), {}), True, calib) == key  # values
    assert model_key(twin, ((torch.rand(2, 1, 9, 9),), {}), True, calib) != key  # shapes
    assert model_key(twin, sample, False, calib) != key  # dynamic dims
    assert model_key(twin, sample, True, [((torch.rand(2, 1, 8, 8),), {})]) != key  # calib
    with torch.no_grad():
        next(twin.parameters()).add_(1e-3)
    assert model_key(twin, sample, True, calib) != key  # weights
    assert model_key(torch.nn.Sequential(model), sample, True, calib) != key  # code


def _entry(root, key, method, size):
    path = os.path.join(root, key, method)
    os.makedirs(path)
    with open(os.path.join(path, "weights.bin"), "wb") as f:
        f.write(b"\0" * size)
    return path


def test_eviction_removes_the_least_recently_used_models_first(tmp_path):
    from nano.search.build_cache import evict, touch

    old = _entry(tmp_path, "old", "openvino_fp32-1", 400)
    mid = _entry(tmp_path, "mid", "openvino_fp32-1", 400)
    new = _entry(tmp_path, "new", "openvino_fp32-1", 400)
    for i, path in enumerate((old, mid, new)):
        os.utime(os.path.dirname(path), (1000 + i, 1000 + i))
    touch(old)  # used just now: the old model is the most recent
    assert evict(str(tmp_path), 900) == [os.path.dirname(mid)]
    assert os.path.isdir(old) and os.path.isdir(new)
    # the model being searched stays, even when it alone is over the limit
    assert evict(str(tmp_path), 0, keep=os.path.dirname(new)) == [os.path.dirname(old)]
    assert os.listdir(tmp_path) == ["new"]


def test_the_size_limit_comes_from_the_environment(monkeypatch):
    from nano.search.build_cache import DEFAULT_MAX_GB, max_bytes

    monkeypatch.setenv("NANO_CACHE_MAX_GB", "0.5")
    assert max_bytes() == 500_000_000
    monkeypatch.setenv("NANO_CACHE_MAX_GB", "lots")
    assert max_bytes() == int(DEFAULT_MAX_GB * 1e9)


def test_a_copy_left_by_a_dead_process_is_removed(tmp_path):
    import subprocess
    import sys

    from nano.search.build_cache import store

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    key_dir = tmp_path / "builds" / "k"
    abandoned = _entry(key_dir.parent, "k", f"openvino_fp32-1.{dead}.partial", 10)
    running = _entry(key_dir.parent, "k", f"onnxruntime_fp32-1.{os.getpid()}.partial", 10)
    note = key_dir / f"compile_int8-1.failed.{dead}.partial"  # a failure note half-written
    note.write_text("{")
    saved = _entry(tmp_path, "saved", "m", 10)
    store(saved, str(key_dir / "jit_fp32-1"))
    assert sorted(os.listdir(key_dir)) == sorted(["jit_fp32-1", os.path.basename(running)])
    assert not os.path.exists(abandoned) and not note.exists()


@pytest.mark.slow
def test_a_candidate_stopped_early_is_kept_for_the_next_search(tmp_path):
    """It is judged again next time (the best so far may differ), without its build."""
    torch.manual_seed(0)
    model = SmallCNN().eval()
    opt = InferenceOptimizer()
    kwargs = dict(includes=["onnxruntime_fp32"], latency_sample_num=5, latency_budget=1,
                  final_round=False, cache_dir=str(tmp_path), early_stop_factor=1e-6)
    opt.optimize(model, _data(), **kwargs)
    assert opt._search.result("onnxruntime_fp32").status == "slow"
    opt.optimize(model, _data(), **kwargs)
    row = opt._search.result("onnxruntime_fp32")
    assert row.status == "slow" and "build cache" in row.detail


@pytest.mark.slow
def test_a_failed_build_is_remembered_and_a_failed_judgement_is_not(tmp_path):
    from tests.inference.models import Unexportable

    torch.manual_seed(0)
    broken = {"metric": True}

    def metric(model, data):
        # fails for the TorchScript row while ``broken``: the build was fine, the metric not
        name = getattr(getattr(model, "method", None), "name", "")
        if broken["metric"] and name == "jit_fp32":
            raise ValueError("a bug in the user's metric")
        return 1.0

    data = torch.rand(4, 4)  # the calibration data is part of the key

    def search(model):
        opt = InferenceOptimizer()
        opt.optimize(model, data, validation_data=torch.rand(4, 4), metric=metric,
                     includes=["jit_fp32", "onnxruntime_fp32"], latency_sample_num=5,
                     latency_budget=1, final_round=False, cache_dir=str(tmp_path))
        return {r.name: r for r in opt.results}

    model = Unexportable()
    first = search(model)
    assert first["onnxruntime_fp32"].status == "failed"
    assert "eigvalsh" in first["onnxruntime_fp32"].detail
    assert first["jit_fp32"].status == "failed" and "a bug in the user's metric" in \
        first["jit_fp32"].detail
    broken["metric"] = False
    second = search(model)
    row = second["onnxruntime_fp32"]
    assert row.status == "failed" and row.cost_seconds == 0
    assert row.detail.startswith("failed to convert: ")
    assert row.detail.endswith("; remembered from an earlier search (build cache)")
    assert "eigvalsh" in row.detail
    assert second["jit_fp32"].status == "ok"  # the metric was fixed: judged again
    # another model (other weights) is not told the first one's failure
    with torch.no_grad():
        model.l.weight.add_(1.0)
    assert "remembered" not in search(model)["onnxruntime_fp32"].detail


def test_a_failure_marker_that_does_not_read_is_dropped(tmp_path):
    from nano.search.build_cache import remember_failure, remembered_failure

    entry = str(tmp_path / "k" / "onnxruntime_fp32-1")
    remember_failure(entry, "OSError: No space left on device")  # transient: not kept
    assert remembered_failure(entry) is None
    remember_failure(entry, "RuntimeError: no rule for aten::linalg_eigvalsh")
    assert remembered_failure(entry) == "RuntimeError: no rule for aten::linalg_eigvalsh"
    with open(entry + ".failed", "w") as f:
        f.write("{not json")
    assert remembered_failure(entry) is None and not os.path.exists(entry + ".failed")
