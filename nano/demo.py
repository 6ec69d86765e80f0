"""The demos ``python -m nano`` runs: optimize() on models Nano ships or loads offline."""

from __future__ import annotations

import os
from typing import Optional

import torch

COMPILE_METHODS = ["compile_fp32", "compile_bf16", "compile_bf16_channels_last"]


def _finish(opt, name: str, out: str, accuracy_criterion: Optional[float], note: str,
            needs_model: str) -> None:
    from nano import InferenceOptimizer

    opt.summary()
    best, description = opt.get_best_model(accuracy_criterion=accuracy_criterion)
    print(f"\nfastest {note}: {description}")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}-best")
    InferenceOptimizer.save(best, path)
    opt.save_summary(os.path.join(out, f"{name}-summary.png"))
    opt.save_summary(os.path.join(out, f"{name}-summary.csv"))
    print(f"saved the pick to {path}/ and the table to {out}/{name}-summary.csv and .png")
    print(f"load it with:  from nano import InferenceOptimizer; model = InferenceOptimizer.load("
          f"{path!r}" + (f", model={needs_model})" if best.needs_model_to_load else ")"))


def resnet_demo(batch: int = 1, full: bool = False, out: str = "nano-out") -> None:
    """optimize() a ResNet-18 (random weights: this is about speed) at ``batch``."""
    from nano import InferenceOptimizer
    from nano.models import resnet18

    print(f"\noptimize(): ResNet-18 (11.7 M parameters), batch {batch}, 224x224")
    print("==========================================================")
    model = resnet18()
    calib = [(torch.randn(batch, 3, 224, 224),) for _ in range(4)]
    opt = InferenceOptimizer()
    # random weights and inputs: no classes to agree on, so judged by relative L2
    opt.optimize(model, calib, excludes=None if full else COMPILE_METHODS,
                 latency_sample_num=50, latency_budget=4, accuracy="rel_l2")
    _finish(opt, "resnet18", out, None, "within the output tolerance", "resnet18()")


def minilm_search(batch: int = 8) -> tuple:
    """The MiniLM demo's optimize() arguments: ``(model, training, validation, cosine)``,
    where validation batches carry the original's embeddings as targets."""
    from nano.models.minilm import SENTENCES, load_minilm

    tokenizer, model = load_minilm()

    def encode(sentences):
        t = tokenizer(sentences, padding="max_length", truncation=True, max_length=32,
                      return_tensors="pt")
        return t["input_ids"], t["attention_mask"]

    train, held_out = SENTENCES[:32], SENTENCES[32:]
    training = [encode(train[i:i + batch]) for i in range(0, len(train), batch)]
    validation = []
    with torch.no_grad():
        for i in range(0, len(held_out), batch):
            ids, mask = encode(held_out[i:i + batch])
            validation.append((ids, mask, model(ids, mask)))

    def cosine(pred, reference):
        return torch.nn.functional.cosine_similarity(pred.float(), reference, dim=-1).min().item()

    return model, training, validation, cosine


def minilm_demo(full: bool = False, out: str = "nano-out", batch: int = 8) -> None:
    """optimize() the all-MiniLM-L6-v2 encoder; keep the fastest whose embeddings have cosine
    similarity >= 0.99 to the original's on held-out sentences."""
    from nano import InferenceOptimizer

    print(f"\noptimize(): all-MiniLM-L6-v2 sentence embeddings (22.7 M parameters), batch {batch}")
    print("===============================================================================")
    model, training, validation, cosine = minilm_search(batch)
    opt = InferenceOptimizer()
    opt.optimize(model, training, validation_data=validation, metric=cosine,
                 excludes=None if full else COMPILE_METHODS, latency_sample_num=50,
                 latency_budget=4)
    # the original scores 1.0, so a relative drop of 0.01 keeps cosine similarity >= 0.99
    _finish(opt, "minilm", out, 0.01, "with every held-out embedding at cosine >= 0.99",
            "nano.models.minilm.load_minilm()[1]")


def generation_demo(out: str = "nano-out") -> None:
    """optimize_generation() on the Shakespeare LM (trained here on first use, about 4
    minutes, then cached); keep the fastest whose greedy tokens and perplexity hold."""
    from nano import InferenceOptimizer
    from nano.models.shakespeare_lm import PROMPTS, held_out_text, load_shakespeare_lm

    print("\noptimize_generation(): a Llama-style LM trained on Shakespeare (4 M parameters)")
    print("=================================================================================")
    tokenizer, model = load_shakespeare_lm("small")
    search = InferenceOptimizer.optimize_generation(model, tokenizer, PROMPTS, held_out_text())
    print(search.summary())
    best = search.best()
    prompt = tokenizer(PROMPTS[:1], return_tensors="pt")
    text = tokenizer.decode(best.generate(**prompt, max_new_tokens=40)[0])
    print(f"\n{best.method} continues {PROMPTS[0]!r}:\n{text}")
    path = os.path.join(out, "shakespeare-best")
    os.makedirs(out, exist_ok=True)
    InferenceOptimizer.save(best, path)
    print(f"\nsaved the pick to {path}/; load it with:  from nano import InferenceOptimizer; "
          f"model = InferenceOptimizer.load({path!r})")
