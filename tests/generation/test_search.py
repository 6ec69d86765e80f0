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
    table = search.summary()
    assert "limit GB/s" in table and f"pick: {pick.method}" in table
    again = [r for r in rows.values() if r.side_by_side]
    if again:  # rows close to the fastest were timed again side by side: the pick is theirs
        assert pick.side_by_side == max(r.side_by_side for r in again)
        assert "timed again side by side" in table
    else:
        assert all(pick.speed(1).decode_tokens_per_s >= r.speed(1).decode_tokens_per_s
                   for r in rows.values() if r.status == "ok")
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


@pytest.mark.slow
def test_the_final_round_times_saved_rows_in_one_process(shakespeare, monkeypatch):
    """Every row counts as close here, so the round runs: each row's saved files are
    loaded and timed in the measuring process, and the pick is the round's fastest."""
    from nano.generation import lm_search
    from nano.models.shakespeare_lm import PROMPTS, held_out_text

    monkeypatch.setattr(lm_search, "FINAL_MARGIN", 1.0)
    tokenizer, model = shakespeare
    search = InferenceOptimizer.optimize_generation(
        model, tokenizer, PROMPTS[:2], held_out_text(), methods=["openvino_int4"],
        new_tokens=8, prompt_tokens=16, batches=(1,))
    rows = [r for r in search.rows if r.status == "ok"]
    assert len(rows) == 2 and all(r.side_by_side and r.side_by_side > 0 for r in rows)
    assert search.best_row().side_by_side == max(r.side_by_side for r in rows)
    assert search.best().method == search.best_row().method


class _Meter:
    """Stands in for the measuring zygote: answers the final round with given rates."""

    def __init__(self, status, rates=()):
        self.status, self.rates, self.tasks = status, list(rates), []

    def run(self, function, task, timeout, memory):
        from types import SimpleNamespace

        self.tasks.append(task)
        return SimpleNamespace(status=self.status, result=self.rates, detail="it crashed")


def _search_with_rows(rates, peak_memory=10**6, rejected=()):
    from nano.generation.lm_search import GenerationOptions, GenerationSearch, LMResult
    from nano.generation.timing import Speed

    names = ["pytorch_fp32", "openvino_fp32", "openvino_int8", "openvino_int4",
             "onnxruntime_int4", "onnxruntime_int8"][:len(rates)]
    search = GenerationSearch(None, None, None, None,
                              GenerationOptions(methods=tuple(names), batches=(1,)))
    search.rows = [LMResult(n, "rejected" if n in rejected else "ok",
                            speeds=[Speed(1, 0.01, rate)], peak_memory_bytes=peak_memory,
                            agreement=1.0, perplexity=10.0)
                   for n, rate in zip(names, rates)]
    return search


def test_rows_close_to_the_fastest_are_timed_again_side_by_side_and_that_picks():
    """Within 25% of the fastest, at most three, fastest first; the rejected and the slow
    are left out; the round's rates decide the pick and the table names them."""
    search = _search_with_rows([50, 100, 95, 90, 80, 99], rejected=("onnxruntime_int8",))
    meter = _Meter("ok", [90.0, 99.0, 85.0])
    search._final_round(meter, "/work", torch.zeros(1, 8, dtype=torch.long))
    [(paths, prompt, new_tokens, rounds)] = meter.tasks
    assert [os.path.basename(p) for p in paths] == ["openvino_fp32", "openvino_int8",
                                                     "openvino_int4"]
    assert prompt.shape == (1, 8) and rounds >= 3
    assert search.best_row().method == "openvino_int8"
    assert search.result("onnxruntime_int4").side_by_side is None  # within 25%, but fourth
    assert "openvino_int8 99.0 tok/s" in search.summary()


def test_no_final_round_when_one_row_is_clearly_fastest_or_memory_is_short(caplog):
    alone = _search_with_rows([50, 100, 60])
    meter = _Meter("ok", [])
    alone._final_round(meter, "/work", torch.zeros(1, 8, dtype=torch.long))
    assert meter.tasks == [] and alone.best_row().method == "openvino_fp32"
    assert "side by side" not in alone.summary()
    import psutil

    big = _search_with_rows([50, 100, 95], peak_memory=psutil.virtual_memory().total)
    with caplog.at_level("WARNING", logger="nano.generation.lm_search"):
        big._final_round(meter, "/work", torch.zeros(1, 8, dtype=torch.long))
    assert meter.tasks == [] and "more than half the free memory" in caplog.text


def test_a_failed_final_round_leaves_the_pick_to_each_rows_own_timing(caplog):
    search = _search_with_rows([50, 100, 95])
    with caplog.at_level("WARNING", logger="nano.generation.lm_search"):
        search._final_round(_Meter("crashed"), "/work", torch.zeros(1, 8, dtype=torch.long))
    assert search.best_row().method == "openvino_fp32"
    assert all(r.side_by_side is None for r in search.rows)
    assert "side by side failed (crashed: it crashed)" in caplog.text
