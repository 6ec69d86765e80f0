"""The tiny Shakespeare LM (trained once per session, about 15 s) and its held-out data."""

import pytest
import torch


@pytest.fixture(scope="session")
def shakespeare():
    """(tokenizer, model) of the 'tiny' recipe: a 2-layer Llama trained on real text."""
    from nano.models.shakespeare_lm import load_shakespeare_lm

    torch.manual_seed(0)
    return load_shakespeare_lm("tiny", progress=False)


@pytest.fixture(scope="session")
def held_out_prompts(shakespeare):
    """Prompts from plays the model never saw, of different lengths (so left-padded)."""
    from nano.models.shakespeare_lm import PROMPTS

    tokenizer, _ = shakespeare
    return tokenizer(PROMPTS[:4], return_tensors="pt", padding=True, padding_side="left")
