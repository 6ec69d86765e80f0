"""bigdl-nano-bench --generate: a generation model from the command line."""

import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(sys.executable), "bigdl-nano-bench")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bench(*args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env)


@pytest.fixture
def held_out(tmp_path):
    from nano.models.shakespeare_lm import held_out_text

    path = tmp_path / "held_out.txt"
    path.write_text(held_out_text())
    return str(path)


@pytest.mark.slow
def test_a_saved_hf_directory_end_to_end(shakespeare, held_out, tmp_path):
    tokenizer, model = shakespeare
    source = tmp_path / "hf"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    out = bench("--generate", str(source), "--held-out", held_out, "--prompt", "VIOLA.\n",
                "--prompt", "ARIEL.\nAll hail", "--methods", "openvino_int4", "--batch", "2",
                "--new-tokens", "8", "--format", "json", "--save", str(tmp_path / "best"))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert [r["method"] for r in report["results"]] == ["pytorch_fp32", "openvino_int4"]
    assert report["pick"] in ("pytorch_fp32", "openvino_int4")
    assert [s["batch"] for s in report["results"][1]["speeds"]] == [1, 2]
    assert "load it with" in out.stderr
    from nano import InferenceOptimizer

    best = InferenceOptimizer.load(str(tmp_path / "best"))
    prompt = tokenizer(["VIOLA.\n"], return_tensors="pt")
    assert best.generate(**prompt, max_new_tokens=4).shape == (1, prompt["input_ids"].shape[1]
                                                               + 4)


@pytest.mark.parametrize("args,said", [
    (["--generate", "no/such/dir", "--held-out", "{held}"], "neither a directory"),
    (["--generate", "{tmp}", "--held-out", "{held}"], "no config.json"),
    (["--generate", "nano.models.shakespeare_lm:load_shakespeare_lm", "--held-out", "nofile"],
     "is not a file"),
    (["--generate", "x:y", "--held-out", "{held}", "--methods", "torchao_int4"],
     "openvino_int4"),
    (["--generate", "x:y", "--held-out", "{held}", "--save", "{held}"], "it is a file"),
    (["--generate", "x:y", "--held-out", "{held}"], "cannot import"),
    (["--generate", "x:y"], "--held-out"),
])
def test_usage_errors_are_one_line_and_status_2(args, said, held_out, tmp_path):
    args = [a.format(held=held_out, tmp=tmp_path) for a in args]
    out = bench(*args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], out.stderr
