"""bigdl-nano-bench end to end, and the MiniLM demo model."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.inference.models import SmallCNN

pytestmark = pytest.mark.slow  # every test here builds runtimes or starts processes

BENCH = os.path.join(os.path.dirname(sys.executable), "bigdl-nano-bench")
FAST = ["--accelerator", "jit,onnxruntime", "--precision", "fp32", "--latency-samples", "10"]


def bench(*args, cwd=None):
    return subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_torchscript_file_end_to_end(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    path = tmp_path / "cnn.pt"
    torch.jit.save(torch.jit.trace(model, torch.rand(2, 1, 8, 8)), str(path))
    out = bench(str(path), "--input-shape", "2,1,8,8", *FAST, "--format", "json",
                "--save", str(tmp_path / "best"), "--plot", str(tmp_path / "p.png"), "--baselines")
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)  # stdout is pure JSON
    names = [r["method"] for r in report["results"]]
    assert names[0] == "original" and "onnxruntime_fp32" in names
    assert "baseline: plain ORT session" in names
    assert report["pick"] in names
    assert "load it with" in out.stderr
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    from nano import InferenceOptimizer

    x = torch.rand(2, 1, 8, 8)
    best = InferenceOptimizer.load(str(tmp_path / "best"), model=model)
    assert torch.allclose(best(x), model(x), atol=1e-4)


def test_module_factory_end_to_end(tmp_path):
    (tmp_path / "mymodels.py").write_text(textwrap.dedent("""
        import torch

        def make():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU())
    """))
    out = bench("mymodels:make", "--input-shape", "3,6", *FAST, "--format", "csv", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("method,status") and lines[1].startswith("original,ok")
    assert "rel-L2" in lines[1]  # random inputs: judged by relative L2 unless asked otherwise


@pytest.mark.parametrize("args,fragment", [
    (["missing.pt", "--input-shape", "1,2"], "neither an existing file"),
    (["nosuchpkg.models:make", "--input-shape", "1,2"], "cannot import 'nosuchpkg.models'"),
    (["os:getcwd", "--input-shape", "1,2"], "not a torch.nn.Module"),
    (["os:nothing", "--input-shape", "1,2"], "no callable 'nothing'"),
    (["x.pt", "--input-shape", "1,two"], "bad --input-shape"),
    (["x.pt"], "required: --input-shape"),
    (["x.pt", "--input-shape", "1,2", "--accelerator", "tpu"], "unknown accelerator 'tpu'"),
    (["x.pt", "--input-shape", "1,2", "--time-budget", "0"], "must be more than 0"),
    (["x.pt", "--input-shape", "1,2", "--latency-target-ms", "fast"], "expected a number"),
    (["x.pt", "--input-shape", "1,2", "--accuracy", "top5"], "argument --accuracy: invalid"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, args, fragment):
    out = bench(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert fragment in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unreadable_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    out = bench(str(bad), "--input-shape", "1,2")
    assert out.returncode == 2 and "cannot read" in out.stderr


def test_minilm_embedder_matches_the_encoder():
    from nano.models.minilm import unavailable_reason

    if unavailable_reason():
        pytest.skip(f"MiniLM extra not installed: {unavailable_reason()}")
    from nano import InferenceOptimizer
    from nano.models.minilm import SENTENCES, load_minilm

    tokenizer, model = load_minilm()
    t = tokenizer(SENTENCES[:4], padding="max_length", max_length=32, truncation=True,
                  return_tensors="pt")
    with torch.no_grad():
        ref = model(t["input_ids"], t["attention_mask"])
    assert ref.shape == (4, 384) and torch.allclose(ref.norm(dim=-1), torch.ones(4), atol=1e-5)
    ov = InferenceOptimizer.trace(model, accelerator="openvino",
                                  input_sample=(t["input_ids"], t["attention_mask"]))
    cos = torch.nn.functional.cosine_similarity(ov(t["input_ids"], t["attention_mask"]), ref)
    assert cos.min() > 0.999


def test_time_budget_leaves_the_rest_untried(tmp_path):
    (tmp_path / "mymodels.py").write_text(textwrap.dedent("""
        import torch

        def make():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU())
    """))
    out = bench("mymodels:make", "--input-shape", "3,6", "--accelerator", "jit,onnxruntime",
                "--precision", "fp32", "--time-budget", "0.01", "--format", "json",
                cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["method"]: r for r in json.loads(out.stdout)["results"]}
    assert rows["original"]["status"] == "ok"
    skipped = [r for name, r in rows.items() if name != "original"]
    assert skipped and all(r["status"] == "skipped" for r in skipped)
    assert all("time_budget=0.01 s spent" in r["detail"] for r in skipped)


def test_all_tries_what_the_default_search_leaves_out(tmp_path):
    (tmp_path / "mlp.py").write_text(textwrap.dedent("""
        import torch

        def make():
            torch.manual_seed(0)
            return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU())
    """))
    common = ("mlp:make", "--input-shape", "3,6", "--accelerator", "pytorch,jit",
              "--precision", "fp32", "--latency-samples", "5", "--format", "json")
    rows = {}
    for mode in ("default", "all"):
        out = bench(*common, *(["--all"] if mode == "all" else []), cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        rows[mode] = {r["method"]: r for r in json.loads(out.stdout)["results"]}
    for name in ("fp32_channels_last", "jit_fp32_channels_last"):
        assert rows["default"][name]["status"] == "skipped"
        assert "this model has none" in rows["default"][name]["detail"]
        assert rows["all"][name]["status"] == "ok"
