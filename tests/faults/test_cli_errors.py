"""Command-line mistakes: one line on stderr, exit status 2, before any long work."""

import json
import os
import subprocess
import time

import pytest
import torch

from tests.faults.helpers import command

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = "tests.faults.models_fault:linear"


def run(name, *args, cwd=ROOT, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([command(name), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def one_line_error(out, prog, fragment):
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1, out.stderr[-2000:]
    assert lines[0].startswith(f"{prog}: error: ") and fragment in lines[0], lines[0]


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_bench_timeout_must_be_positive(value):
    one_line_error(run("bigdl-nano-bench", MODEL, "--input-shape", "1,4", f"--timeout={value}"),
                   "bigdl-nano-bench", "--timeout: must be more than 0")


@pytest.mark.slow
@pytest.mark.parametrize("option, path, fragment", [
    ("--save", "/proc/nano-test/best", "cannot save to"),
    ("--save", "{tmp}/a-file/best", "is a file, not a directory"),
    ("--plot", "/proc/nano-test.png", "--plot"),
    ("--plot", "{tmp}/missing-dir/p.png", "does not exist"),
    ("--plot", "{tmp}/table.xlsx", "unknown extension '.xlsx'"),
])
def test_bench_output_paths_are_checked_before_the_search(tmp_path, option, path, fragment):
    (tmp_path / "a-file").write_text("x")
    started = time.monotonic()
    out = run("bigdl-nano-bench", MODEL, "--input-shape", "1,4", option,
              path.format(tmp=tmp_path))
    one_line_error(out, "bigdl-nano-bench", fragment)
    assert time.monotonic() - started < 30  # the search (a minute or more) never started
    assert "optimize" not in out.stderr


@pytest.mark.slow
def test_bench_corrupt_exported_program_is_one_line(tmp_path):
    class Plus(torch.nn.Module):
        def forward(self, x):
            return x + 1

    good = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(Plus(), (torch.randn(2),)), str(good))
    data = bytearray(good.read_bytes())
    for i in range(200, len(data), 97):
        data[i] ^= 0xFF
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(bytes(data))
    one_line_error(run("bigdl-nano-bench", str(bad), "--input-shape", "2"), "bigdl-nano-bench",
                   "is the file damaged?")


def test_run_log_dir_that_is_a_file(tmp_path):
    (tmp_path / "logs").write_text("x")
    one_line_error(run("bigdl-nano-run", "--log-dir", str(tmp_path / "logs"), "--", "true"),
                   "bigdl-nano-run", "is a file")


def test_init_warns_when_threads_exceed_the_cpus():
    out = run("bigdl-nano-init", "-r", "1000")
    assert out.returncode == 0
    assert "export OMP_NUM_THREADS=1000" in out.stdout
    warning = [line for line in out.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "1000 threads exceed the" in warning[0], out.stderr
    cpus = len(os.sched_getaffinity(0))
    quiet = run("bigdl-nano-init", "-r", str(cpus))
    assert "exceed" not in quiet.stderr


@pytest.mark.slow
def test_bench_model_that_does_not_fit_the_shape_is_a_usage_error():
    one_line_error(run("bigdl-nano-bench", MODEL, "--input-shape", "1,5"), "bigdl-nano-bench",
                   "does not run on inputs of shape (1, 5)")


@pytest.mark.slow
def test_python_api_summary_extension(tmp_path):
    from nano import InferenceOptimizer
    from nano.errors import NanoValueError

    opt = InferenceOptimizer()
    opt.optimize(torch.nn.Linear(4, 2), torch.randn(8, 4), includes=["original"],
                 latency_sample_num=5, final_round=False)
    with pytest.raises(NanoValueError, match=r"unknown extension '\.xlsx'"):
        opt.save_summary(str(tmp_path / "t.xlsx"))
    assert not (tmp_path / "t.xlsx").exists()
    opt.save_summary(str(tmp_path / "t.csv"))
    assert (tmp_path / "t.csv").read_text().startswith("method,")


@pytest.mark.slow
def test_bench_save_twice_into_the_same_directory(tmp_path):
    """The issue's reproduction: two bench runs with --save d, then one flipped byte."""
    from nano import InferenceOptimizer
    from nano.runtimes.model_files import META_FILE, ModelLoadError

    target = tmp_path / "d"
    for accelerator, kept in (("jit", "model.pt"), ("onnxruntime", "model.onnx")):
        out = run("bigdl-nano-bench", MODEL, "--input-shape", "2,4", "--accelerator",
                  accelerator, "--precision", "fp32", "--calib", "0", "--latency-samples", "5",
                  "--save", str(target), timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        meta = json.loads((target / META_FILE).read_text())
        assert sorted(meta["files"]) == sorted(p.name for p in target.iterdir()
                                               if p.name != META_FILE)
        if meta["method_name"] != "original":  # the pick may be plain PyTorch
            assert kept in meta["files"]
    assert "model.pt" not in os.listdir(target) or "model.onnx" not in os.listdir(target)
    name = sorted(meta["files"])[0]
    data = bytearray((target / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (target / name).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match its checksum"):
        InferenceOptimizer.load(str(target), model=torch.nn.Linear(4, 2))
