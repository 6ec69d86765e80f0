"""One decoding loop over a model that takes a step of tokens and keeps its own KV cache.

The loop does what ``transformers``' ``generate()`` does for the options Nano's candidates
accept: greedy or sampled tokens (temperature, top-k, top-p), left-padded batches,
``min_new_tokens``, and rows that stop at ``eos`` while others go on (their later
positions hold ``pad``). Greedy decoding gives the original's tokens exactly wherever the
step's logits rank the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from nano.errors import NanoValueError

# step(input_ids, attention_mask, position_ids) -> logits of the last position, (batch, vocab)
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen: greedy unless ``do_sample``."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0

    def __post_init__(self):
        if self.temperature <= 0:
            raise NanoValueError(f"temperature must be > 0, got {self.temperature!r}")
        if self.top_k < 0:
            raise NanoValueError(f"top_k must be >= 0, got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise NanoValueError(f"top_p must be in (0, 1], got {self.top_p!r}")

    def choose(self, logits: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """The next token of each row, from the last position's logits."""
        if not self.do_sample:
            return logits.argmax(-1)
        scores = logits.float() / self.temperature
        if self.top_k:
            kth = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1:
            ordered, index = scores.sort(dim=-1, descending=True)
            cumulative = ordered.softmax(-1).cumsum(-1)
            drop = cumulative - ordered.softmax(-1) >= self.top_p  # keeps the first past top_p
            scores = scores.scatter(-1, index, ordered.masked_fill(drop, float("-inf")))
        probs = scores.softmax(-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over the real tokens (left padding gets 0), as HF models count them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def decode(step: Step, input_ids: torch.Tensor, attention_mask: torch.Tensor,
           max_new_tokens: int, sampling: Sampling, eos_token_ids: Sequence[int],
           pad_token_id: int, min_new_tokens: int = 0,
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Prompt plus new tokens, (batch, prompt + up to ``max_new_tokens``), as ``generate()``."""
    batch, prompt = input_ids.shape
    # Few tensor ops per token: after a fast model's step has streamed its weights, each op
    # runs on cold caches (about 40-100 us here), next to a 10 ms step. The mask and the
    # positions of the whole run are made once, and a step gets views of them.
    mask = torch.ones(batch, prompt + max_new_tokens, dtype=torch.long)
    mask[:, :prompt] = attention_mask
    positions = position_ids(mask[:, :prompt])
    later = positions[:, -1:] + torch.arange(1, max_new_tokens + 1)  # the new tokens'
    logits = step(input_ids, mask[:, :prompt].contiguous(), positions)
    done = torch.zeros(batch, dtype=torch.bool)
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long)
    new: list[torch.Tensor] = []
    for i in range(max_new_tokens):
        if i < min_new_tokens and eos.numel():
            logits = logits.clone()
            logits[:, eos] = float("-inf")
        token = sampling.choose(logits, generator)
        if new and bool(done.any()):  # rows past their eos hold pad
            token = token.masked_fill(done, pad_token_id)
        new.append(token)
        if eos.numel():
            done |= torch.isin(token, eos)
        if i == max_new_tokens - 1 or bool(done.all()):
            break
        # a copy only for a batch: one row's columns are contiguous already
        logits = step(token[:, None], mask[:, :prompt + i + 1].contiguous(), later[:, i:i + 1])
    return torch.cat([input_ids, torch.stack(new, dim=1)], dim=1) if new else input_ids
