"""What users feel of a generating model: time to first token and decode tokens/s, and the
limit memory bandwidth sets on decode.

Decode reads every weight once per step (a batch shares the read) plus the KV cache, so
``decode tokens/s <= bandwidth / bytes read per step`` per row of the batch.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from nano.generation.causal_lm import kv_shape
from nano.generation.lm_models import GeneratingModel


def read_bandwidth(size_bytes: int, repeats: int = 5) -> float:
    """The most a decode step reading ``size_bytes`` can stream, in bytes/s: the best of
    ``repeats`` reads of a buffer that large on the threads torch uses, each the faster of
    a sum and a dot product of the buffer with itself (which is faster differs by CPU).

    The buffer is read again and again, as a step reads its weights, so a step small enough
    for a CPU cache is held to that cache's speed: on a Xeon with a 300 MiB cache, 216 MB
    read at 64 GB/s and 1 GiB at 35. A read of 1 GiB alone made a 0.43 B model's INT4 step
    (216 MB) show 110% of its limit."""
    data = torch.ones(max(size_bytes, 4096) // 4)
    data.sum()  # touch every page first
    best = float("inf")
    for _ in range(repeats):
        for read in (data.sum, lambda: torch.dot(data, data)):
            start = time.perf_counter()
            read()
            best = min(best, time.perf_counter() - start)
    return data.numel() * 4 / best


@dataclass(frozen=True)
class Speed:
    """Time to first token (s) and decode tokens/s (all rows together) at one batch size."""

    batch: int
    first_token_s: float
    decode_tokens_per_s: float


def measure(model: GeneratingModel, prompt_ids: torch.Tensor, new_tokens: int,
            repeats: int = 3) -> Speed:
    """Median time of the prompt pass plus one token, and of ``new_tokens`` more."""
    mask = torch.ones_like(prompt_ids)
    batch = prompt_ids.shape[0]

    def timed(tokens: int) -> float:
        start = time.perf_counter()
        model.generate(prompt_ids, mask, max_new_tokens=tokens, min_new_tokens=tokens)
        return time.perf_counter() - start

    timed(1), timed(new_tokens + 1)  # warm up: the very calls timed (a compiled model
    # compiles for each cache size)
    first = statistics.median(timed(1) for _ in range(repeats))
    whole = statistics.median(timed(new_tokens + 1) for _ in range(repeats))
    return Speed(batch, first, batch * new_tokens / max(whole - first, 1e-9))


def bytes_per_step(config: Any, weight_bytes: int, batch: int, context: int,
                   cache_bytes_per_value: int) -> int:
    """Bytes a decode step reads: the weights, and each row's cache at ``context`` tokens."""
    layers, kv_heads, head_dim = kv_shape(config)
    return weight_bytes + batch * context * 2 * layers * kv_heads * head_dim \
        * cache_bytes_per_value
