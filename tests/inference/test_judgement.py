"""Outputs judged by what they mean: top-1 for logits, cosine for embeddings, rel-L2 else."""

import math

import pytest
import torch
from torch import nn

from nano.errors import NanoValueError
from nano.runtimes.calibration import (CALIBRATION_BATCHES, HELD_OUT_BATCHES,
                                       MIN_HELD_OUT_SAMPLES, MORE_CALIBRATION_BATCHES, batch_rows,
                                       calibration_and_held_out, held_out_read)
from nano.runtimes.data import as_batches
from nano.search.judgement import TOLERANCE, OutputJudgement


def kinds(reference, model=None, accuracy=None):
    return OutputJudgement.decide(model or nn.Identity(), reference, accuracy).kinds


def test_each_output_kind_gets_its_judgement():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 10, generator=g)
    unit = nn.functional.normalize(torch.randn(8, 384, generator=g), dim=-1)
    assert kinds(logits) == ("top1",)
    assert kinds(unit) == ("cosine",)
    assert kinds(torch.randn(8, 3, 16, 16)) == ("rel_l2",)  # e.g. a segmentation map
    assert kinds(torch.randn(8)) == ("rel_l2",)  # a score per row
    assert kinds(torch.randn(8, 1)) == ("rel_l2",)
    assert kinds(torch.arange(8)) == ("match",)
    # the names transformers gives its outputs decide over the shape
    hf = {"last_hidden_state": torch.randn(2, 5, 64), "pooler_output": torch.randn(2, 64)}
    assert kinds(hf) == ("cosine", "cosine")
    assert kinds({"logits": torch.randn(2, 5, 64)}) == ("top1",)
    # 3-D: token logits over the model's vocabulary, else per-token vectors
    lm = nn.Embedding(1000, 16)
    assert kinds(torch.randn(2, 5, 1000), lm) == ("top1",)
    assert kinds(torch.randn(2, 5, 64), lm) == ("cosine",)


def test_a_named_judgement_applies_where_it_can():
    assert kinds((torch.randn(4, 10), torch.randn(4)), accuracy="cosine") == ("cosine", "rel_l2")
    assert kinds(torch.randn(4, 10), accuracy="rel_l2") == ("rel_l2",)
    with pytest.raises(NanoValueError, match="accuracy must be one of"):
        kinds(torch.randn(4, 10), accuracy="top5")


def _flip_rows(logits: torch.Tensor, rows: list) -> torch.Tensor:
    """``logits`` with the top two classes of ``rows`` swapped."""
    out = logits.clone()
    top2 = logits.topk(2, dim=-1).indices
    for r in rows:
        a, b = top2[r]
        out[r, a], out[r, b] = logits[r, b], logits[r, a]
    return out


def test_top1_agreement_counts_rows_over_every_held_out_batch():
    g = torch.Generator().manual_seed(1)
    refs = [torch.randn(50, 10, generator=g) for _ in range(2)]
    outs = [_flip_rows(refs[0], [3, 7]), refs[1].clone()]
    judged = OutputJudgement.decide(nn.Identity(), refs[0]).judge(outs, refs)
    (leaf,) = judged.leaves
    assert (leaf.kind, leaf.rows) == ("top1", 100)
    assert leaf.error == pytest.approx(0.02)
    assert leaf.top5 == 1.0  # the original's class is still second
    assert judged.describe("bf16") == "top-1 0.9800"


def test_the_issue_case_a_bf16_classifier_that_keeps_its_classes_passes():
    """97% top-1 agreement with a 5.1% largest relative logit error: rejected as drift by a
    max-abs judgement, accepted by top-1 for bf16 (and still refused for fp32)."""
    g = torch.Generator().manual_seed(2)
    ref = torch.randn(100, 1000, generator=g)
    out = _flip_rows(ref, [5, 50, 95])
    out[0, 0] += 0.051 * ref.abs().max()
    assert (out - ref).abs().max() / ref.abs().max() > 0.05
    judged = OutputJudgement.decide(nn.Identity(), ref).judge([out], [ref])
    assert judged.error("bf16") == pytest.approx(0.03)
    assert judged.passes("bf16")
    assert not judged.passes("fp32")
    assert "top-1 0.9700" in judged.shortfall("fp32")
    assert not judged.passes("bf16", limit=0.01)  # a user's criterion replaces the default


def test_cosine_is_the_smallest_over_rows_and_rel_l2_the_norm_ratio():
    g = torch.Generator().manual_seed(3)
    ref = nn.functional.normalize(torch.randn(20, 64, generator=g), dim=-1)
    out = ref.clone()
    out[4] = nn.functional.normalize(ref[4] + 0.2 * torch.randn(64, generator=g), dim=0)
    judged = OutputJudgement.decide(nn.Identity(), ref).judge([out], [ref])
    want = nn.functional.cosine_similarity(out[4], ref[4], dim=0).item()
    assert judged.error("int8") == pytest.approx(1 - want, rel=1e-4)
    plain = torch.randn(6, 3, 4, 4, generator=g)
    noisy = plain + 0.01 * torch.randn(plain.shape, generator=g)
    judged = OutputJudgement.decide(nn.Identity(), plain).judge([noisy], [plain])
    assert judged.error("fp32") == pytest.approx(((noisy - plain).norm() / plain.norm()).item())


def test_wrong_shapes_and_nan_never_pass():
    ref = torch.randn(4, 10)
    judgement = OutputJudgement.decide(nn.Identity(), ref)
    assert math.isinf(judgement.judge([torch.randn(4, 9)], [ref]).error("int8"))
    nan = ref.clone()
    nan[1, 2] = float("nan")
    assert not judgement.judge([nan], [ref]).passes("int8", limit=1.0)
    assert not judgement.judge([(ref, ref)], [ref]).passes("int8", limit=1.0)


def test_every_output_must_pass_its_own_judgement():
    ref = {"logits": torch.randn(8, 10), "score": torch.randn(8)}
    judgement = OutputJudgement.decide(nn.Identity(), ref)
    off = {"logits": ref["logits"].clone(), "score": ref["score"] * 1.5}  # logits right
    judged = judgement.judge([off], [ref])
    assert not judged.passes("int8")
    assert judged.worst("int8").name == "score"
    assert "score" in judged.shortfall("int8")


def test_default_tolerances_are_ordered_by_precision():
    for table in TOLERANCE.values():
        assert table["fp32"] <= table["bf16"] <= table["int8"]


def test_held_out_batches_are_not_calibration_batches():
    for calibration in (CALIBRATION_BATCHES, MORE_CALIBRATION_BATCHES):
        for n in range(2, calibration + HELD_OUT_BATCHES + 1):
            calib, held = calibration_and_held_out(list(range(n)), calibration)
            assert calib and held and not set(calib) & set(held)
            # every batch read is used: the ones past the calibration batches (at least the
            # last quarter) are held out
            assert len(calib) <= calibration and calib + held == list(range(n))
            assert len(held) >= max(1, n // 4, n - calibration)
    assert calibration_and_held_out([0]) == ([0], [0])


@pytest.mark.parametrize("batch,read", [(1, CALIBRATION_BATCHES + MIN_HELD_OUT_SAMPLES),
                                        (16, CALIBRATION_BATCHES + MIN_HELD_OUT_SAMPLES // 16),
                                        (100, CALIBRATION_BATCHES + 1)])
def test_held_out_data_is_read_until_it_holds_enough_samples(batch, read):
    """A verdict on 8 batch-1 images promised 0.95 and kept 0.875: read on past the
    calibration batches until the held-out ones hold MIN_HELD_OUT_SAMPLES rows."""
    consumed = []

    def loader():
        for i in range(1000):
            consumed.append(i)
            yield torch.randn(batch, 4), torch.zeros(batch)

    batches = as_batches(loader(), "training_data",
                         limit=CALIBRATION_BATCHES + HELD_OUT_BATCHES,
                         until=held_out_read(CALIBRATION_BATCHES))
    assert len(batches) == len(consumed) == read
    calib, held = calibration_and_held_out(batches, CALIBRATION_BATCHES)
    assert len(calib) == CALIBRATION_BATCHES
    assert sum(batch_rows(b) for b in held) >= MIN_HELD_OUT_SAMPLES


def test_optimize_refuses_a_bad_judgement_before_any_work():
    from nano import InferenceOptimizer

    opt = InferenceOptimizer()
    with pytest.raises(NanoValueError, match="accuracy must be one of 'top1', 'cosine'"):
        opt.optimize(nn.Linear(4, 2), torch.randn(2, 4), accuracy="top5")
    with pytest.raises(NanoValueError, match="pass metric or accuracy, not both"):
        opt.optimize(nn.Linear(4, 2), torch.randn(2, 4), accuracy="top1",
                     metric=lambda model, data: 1.0)
