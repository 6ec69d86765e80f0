"""Models that misbehave on purpose, importable as ``tests.faults.models_fault:factory``.

Their bad behaviour is switched on only in processes other than the one that
imported this module: Nano's isolated children (forked from a process that
unpickled the model), not the caller, whose own checks stay fine, as with a model
that breaks only in some runtime. ``FAULT_MARKER`` names a file: the first such
call creates it and runs normally (bigdl-nano-bench's check that the model runs,
when that happens in a child), later calls misbehave.
"""

import os
import time

import torch


_IMPORTED_IN = os.getpid()


def _misbehave_now() -> bool:
    if os.getpid() == _IMPORTED_IN:
        return False
    marker = os.environ.get("FAULT_MARKER")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        return False
    return True


class HangsInSearch(torch.nn.Module):
    """Sleeps for an hour in every isolated call after the first."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x):
        if _misbehave_now():
            time.sleep(3600)
        return self.lin(x)


class CrashesInSearch(HangsInSearch):
    """Aborts (SIGABRT) in every isolated call after the first."""

    def forward(self, x):
        if _misbehave_now():
            os.abort()
        return self.lin(x)


class HangsAlways(HangsInSearch):
    def forward(self, x):
        time.sleep(3600)
        return self.lin(x)


def hangs_in_search():
    return HangsInSearch()


def crashes_in_search():
    return CrashesInSearch()


def hangs_always():
    return HangsAlways()


def linear():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def tiny_lm():
    """(tokenizer, model) for bigdl-nano-bench --generate: an untrained 2-layer Llama and a
    character tokenizer (what an interrupt leaves behind does not depend on the weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.generation.helpers import characters

    torch.manual_seed(0)
    # a vocabulary wider than the MLP: onnxruntime-genai's builder would take a layer as
    # wide as the vocabulary for the head, and Nano would leave its candidates out
    config = LlamaConfig(vocab_size=160, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=256, eos_token_id=0, pad_token_id=0)
    return characters, LlamaForCausalLM(config).eval()
