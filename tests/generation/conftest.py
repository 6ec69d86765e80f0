"""The tiny Shakespeare LM (trained once per session, about 15 s) and its held-out data."""

import os

import pytest
import torch


@pytest.fixture(scope="session")
def shakespeare():
    """(tokenizer, model) of the 'tiny' recipe: a 2-layer Llama trained on real text. The
    emulated lane trains it natively first and names its directory in NANO_TEST_LM_DIR
    (training as an emulated CPU would take minutes)."""
    from nano.models.shakespeare_lm import load_shakespeare_lm

    saved = os.environ.get("NANO_TEST_LM_DIR")
    if saved:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return (AutoTokenizer.from_pretrained(saved),
                AutoModelForCausalLM.from_pretrained(saved).eval())
    torch.manual_seed(0)
    return load_shakespeare_lm("tiny", progress=False)


@pytest.fixture(scope="session")
def held_out_prompts(shakespeare):
    """Prompts from plays the model never saw, of different lengths (so left-padded)."""
    from nano.models.shakespeare_lm import PROMPTS

    tokenizer, _ = shakespeare
    return tokenizer(PROMPTS[:4], return_tensors="pt", padding=True, padding_side="left")
