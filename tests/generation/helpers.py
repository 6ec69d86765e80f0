"""A tokenizer for tests whose model weights do not matter."""

import torch


def characters(texts, return_tensors="pt", padding=True, padding_side="left"):
    """A tokenizer of one id per character (what the search calls)."""
    if isinstance(texts, str):
        texts = [texts]
    width = max(len(t) for t in texts)
    ids = torch.tensor([[0] * (width - len(t)) + [ord(c) % 128 for c in t] for t in texts])
    mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in texts])
    return {"input_ids": ids, "attention_mask": mask}
