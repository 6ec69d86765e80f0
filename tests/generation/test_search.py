"""optimize_generation end to end on the tiny Shakespeare LM: every row, the pick, the table."""

import gc
import glob
import os
import tempfile

import pytest
import torch

from nano import InferenceOptimizer
from nano.launcher.capability import current


@pytest.mark.slow
def test_optimize_generation_judges_times_and_picks(shakespeare):
    from nano.models.shakespeare_lm import PROMPTS, held_out_text

    tokenizer, model = shakespeare
    leftovers = set(glob.glob(os.path.join(tempfile.gettempdir(), "nano-*")))
    methods = ["pytorch_bf16", "torchao_int8", "onnxruntime_fp32", "openvino_int4"]
    search = InferenceOptimizer.optimize_generation(model, tokenizer, PROMPTS, held_out_text(),
                                                    methods, new_tokens=16, prompt_tokens=32)
    rows = {r.method: r for r in search.rows}
    assert list(rows) == ["pytorch_fp32", *methods]  # the original is always measured
    bf16 = "ok" if current().native("bf16") else "skipped"
    assert rows["pytorch_bf16"].status in ((bf16, "rejected") if bf16 == "ok" else (bf16,))
    for method in ("pytorch_fp32", "onnxruntime_fp32"):
        assert rows[method].status == "ok" and rows[method].agreement == 1.0
    for row in rows.values():
        if row.status == "ok":  # everything the table shows was measured
            assert row.agreement >= 0.9 and len(row.speeds) == 2 and row.size_bytes > 0
            assert all(s.decode_tokens_per_s > 0 and s.first_token_s > 0 for s in row.speeds)
            assert row.limit_tokens_per_s and row.limit_tokens_per_s > 0
            assert row.bandwidth > 1e8 and row.bytes_per_step > 0
    pick = search.best_row()
    assert pick.status == "ok"
    assert all(pick.speed(1).decode_tokens_per_s >= r.speed(1).decode_tokens_per_s
               for r in rows.values() if r.status == "ok")
    table = search.summary()
    assert "limit GB/s" in table and f"pick: {pick.method}" in table
    # the pick generates: its greedy tokens agree with the original's as judged
    prompts = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True, padding_side="left")
    got = search.best().generate(**prompts, max_new_tokens=8)
    want = model.generate(**prompts, max_new_tokens=8, do_sample=False)
    assert got.shape[0] == 2 and (got[:, -8:] == want[:, -8:]).float().mean() >= 0.75
    del search  # the pick's files live as long as the pick
    gc.collect()
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "nano-*"))) <= leftovers


@pytest.mark.slow
def test_a_rejected_candidate_says_why(shakespeare):
    from nano.models.shakespeare_lm import PROMPTS, held_out_text

    tokenizer, model = shakespeare
    search = InferenceOptimizer.optimize_generation(
        model, tokenizer, PROMPTS[:2], held_out_text(), methods=["openvino_int4"],
        new_tokens=8, prompt_tokens=16, batches=(1,), min_agreement=1.0,
        max_perplexity_increase=0.0)
    row = search.result("openvino_int4")
    assert row.status == "rejected" and ("agreement" in row.detail or "perplexity" in row.detail)
    assert search.best_row().method == "pytorch_fp32"
    assert search.best().generate(**tokenizer(PROMPTS[:1], return_tensors="pt"),
                                  max_new_tokens=4).shape[1] > 0
    assert isinstance(search.best().module, torch.nn.Module)


@pytest.mark.slow
def test_an_onnx_runtime_pick_saves_and_loads_in_a_fresh_process(shakespeare, tmp_path):
    """The pick reads its files from a directory of its own: the search's is gone when the
    search returns (its ONNX Runtime pick could not be saved), and the pick's goes with it."""
    import subprocess

    from nano.models.shakespeare_lm import PROMPTS, held_out_text
    from tests.fresh_process import ROOT, python_command

    tokenizer, model = shakespeare
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "nano-*")))
    search = InferenceOptimizer.optimize_generation(
        model, tokenizer, PROMPTS[:2], held_out_text(), ["onnxruntime_int4"], new_tokens=8,
        prompt_tokens=16, batches=(1,))
    best = search.best()
    assert best.method == "onnxruntime_int4"  # 5-10x the original's decode here
    prompts = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True, padding_side="left")
    want = best.generate(**prompts, max_new_tokens=8)
    saved = str(tmp_path / "pick")
    InferenceOptimizer.save(best, saved)
    io = str(tmp_path / "io.pt")
    torch.save({"prompts": dict(prompts), "want": want}, io)
    script = ("import torch\nfrom nano import InferenceOptimizer\n"
              f"io = torch.load({io!r})\nm = InferenceOptimizer.load({saved!r})\n"
              "assert torch.equal(m.generate(**io['prompts'], max_new_tokens=8), io['want'])\n")
    done = subprocess.run([*python_command(), "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    del search, best
    gc.collect()
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "nano-*"))) <= before
