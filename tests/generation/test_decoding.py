"""Nano's decoding loop against a model whose next token is known (no runtime is built)."""

import pytest
import torch

from nano.errors import NanoValueError
from nano.generation.decoding import Sampling, decode, position_ids

VOCAB = 10


def counting_step(calls):
    """A step whose top token is (last token + 1) % VOCAB, recording each call's shapes."""
    def step(ids, mask, positions):
        calls.append((tuple(ids.shape), tuple(mask.shape), positions.clone(), mask.clone()))
        logits = torch.zeros(ids.shape[0], VOCAB)
        logits[torch.arange(ids.shape[0]), (ids[:, -1] + 1) % VOCAB] = 5.0
        return logits
    return step


def test_greedy_feeds_one_token_per_step_with_the_mask_and_positions_growing():
    calls = []
    ids = torch.tensor([[0, 3, 4], [1, 2, 3]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    out = decode(counting_step(calls), ids, mask, 4, Sampling(), [], pad_token_id=0)
    assert out.tolist() == [[0, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7]]
    assert [c[0] for c in calls] == [(2, 3), (2, 1), (2, 1), (2, 1)]
    assert [c[1] for c in calls] == [(2, 3), (2, 4), (2, 5), (2, 6)]
    # left padding: the padded row's positions start at its first real token
    assert calls[0][2].tolist() == [[0, 0, 1], [0, 1, 2]]
    assert calls[1][2].tolist() == [[2], [3]]
    assert calls[3][2].tolist() == [[4], [5]]
    # the prompt's padding stays masked, every new token is attended
    assert calls[3][3].tolist() == [[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]


def test_a_row_that_reaches_eos_is_padded_while_the_others_go_on():
    ids = torch.tensor([[6], [2]])
    out = decode(counting_step([]), ids, torch.ones_like(ids), 5, Sampling(), [8],
                 pad_token_id=0)
    assert out.tolist() == [[6, 7, 8, 0, 0, 0], [2, 3, 4, 5, 6, 7]]


def test_generation_stops_when_every_row_has_ended():
    calls = []
    ids = torch.tensor([[6], [7]])
    out = decode(counting_step(calls), ids, torch.ones_like(ids), 10, Sampling(), [8],
                 pad_token_id=0)
    assert out.tolist() == [[6, 7, 8], [7, 8, 0]]
    assert len(calls) == 2  # the prompt, then one step: no step after the last eos


def test_min_new_tokens_holds_eos_back():
    ids = torch.tensor([[7]])
    out = decode(counting_step([]), ids, torch.ones_like(ids), 3, Sampling(), [8],
                 pad_token_id=0, min_new_tokens=2)
    assert out[0, 1].item() != 8 and out.shape[1] == 4


def test_sampling_is_reproducible_with_a_generator_and_top_k_1_is_greedy():
    ids = torch.tensor([[1, 2], [3, 4]])
    mask = torch.ones_like(ids)

    def noisy(i, m, p):
        return torch.randn(i.shape[0], VOCAB, generator=torch.Generator().manual_seed(
            int(m.shape[1])))

    sample = Sampling(do_sample=True, temperature=0.7, top_k=4, top_p=0.9)
    a = decode(noisy, ids, mask, 6, sample, [], 0, generator=torch.Generator().manual_seed(3))
    b = decode(noisy, ids, mask, 6, sample, [], 0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    greedy = decode(noisy, ids, mask, 6, Sampling(), [], 0)
    top1 = decode(noisy, ids, mask, 6, Sampling(do_sample=True, top_k=1), [], 0,
                  generator=torch.Generator().manual_seed(5))
    assert torch.equal(greedy, top1)


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    drawn = {Sampling(do_sample=True, top_p=0.8).choose(logits, torch.Generator().manual_seed(s))
             .item() for s in range(200)}
    assert drawn == {0, 1}


@pytest.mark.parametrize("kwargs", [{"temperature": 0}, {"top_k": -1}, {"top_p": 0},
                                    {"top_p": 1.5}])
def test_bad_sampling_options_are_one_line(kwargs):
    with pytest.raises(NanoValueError) as e:
        Sampling(do_sample=True, **kwargs)
    assert "\n" not in str(e.value)


def test_positions_count_real_tokens_only():
    assert position_ids(torch.tensor([[0, 0, 1, 1]])).tolist() == [[0, 0, 0, 1]]
