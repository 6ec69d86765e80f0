"""How a generating candidate is judged: greedy-token agreement and perplexity.

Agreement is read along the original's own greedy path: the candidate is given each
held-out prompt plus the original's first N new tokens, and at each of those N positions
its top token is compared with the original's. A single flipped token would make a
free-running comparison disagree everywhere after it, whatever the candidate does next;
along the original's path every position counts once. Perplexity is on held-out text
windows, every window position after the first predicted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nano.generation.lm_models import GeneratingModel

# Defaults, from the Shakespeare model's candidates (README "Text generation"): fp32 ones
# agree 1.0 and keep perplexity within 0.1%; weight-only INT8 agrees >= 0.98 (+<0.5%);
# INT4 in groups agrees 0.87-0.95 (+3-6%) on that small model.
MIN_AGREEMENT = 0.9
MAX_PERPLEXITY_INCREASE = 0.1


@dataclass(frozen=True)
class HeldOut:
    """What a candidate is judged on: prompts with the original's greedy continuation, and
    text windows for perplexity."""

    sequences: torch.Tensor  # (n, prompt + new): left-padded prompt, then the new tokens
    mask: torch.Tensor
    new_tokens: int
    windows: torch.Tensor  # (m, length) token ids of held-out text

    @staticmethod
    def from_original(original: GeneratingModel, prompt_ids: torch.Tensor,
                      prompt_mask: torch.Tensor, windows: torch.Tensor,
                      new_tokens: int) -> "HeldOut":
        """Run the original's greedy decoding once (no early stop at eos)."""
        sequences = original.generate(prompt_ids, prompt_mask, max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens)
        mask = torch.cat([prompt_mask.long(), torch.ones(len(sequences), new_tokens,
                                                         dtype=torch.long)], dim=1)
        return HeldOut(sequences, mask, new_tokens, windows)


def agreement(candidate: GeneratingModel, held_out: HeldOut) -> float:
    """Share of the original's greedy tokens that are the candidate's top token too."""
    logits = candidate.logits(held_out.sequences, held_out.mask)
    n = held_out.new_tokens
    predicted = logits[:, -n - 1:-1].argmax(-1)
    return (predicted == held_out.sequences[:, -n:]).float().mean().item()


def perplexity(candidate: GeneratingModel, windows: torch.Tensor, batch: int = 8) -> float:
    """exp(mean negative log-likelihood) of the windows' tokens after the first."""
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        ids = windows[i:i + batch]
        logits = candidate.logits(ids, torch.ones_like(ids))
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                ids[:, 1:].reshape(-1), reduction="sum")
        total += nll.item()
        count += ids[:, 1:].numel()
    return math.exp(total / count)
