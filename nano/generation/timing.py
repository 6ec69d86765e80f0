"""What users feel of a generating model: time to first token and decode tokens/s, and the
limit memory bandwidth sets on decode.

Decode reads every weight once per step (a batch shares the read) plus the KV cache, so
``decode tokens/s <= bandwidth / bytes read per step`` per row of the batch.
"""

from __future__ import annotations

import glob
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from nano.generation.causal_lm import kv_shape
from nano.generation.lm_models import GeneratingModel


def memory_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """This machine's read bandwidth in bytes/s: the best of ``repeats`` reads of a buffer
    far larger than any cache, on the threads torch uses. Each read is the faster of two
    kernels (a sum, and a dot product of the buffer with itself, which loads each byte
    from memory once): which reads faster differs by CPU, by 10% here."""
    data = torch.ones(int(gib * 2**30) // 4)
    data.sum()  # touch every page first
    best = float("inf")
    for _ in range(repeats):
        for read in (data.sum, lambda: torch.dot(data, data)):
            start = time.perf_counter()
            read()
            best = min(best, time.perf_counter() - start)
    return data.numel() * 4 / best


def last_level_cache_bytes(root: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """The largest CPU cache's size, from sysfs (0 where it does not say): a decode step
    reading less may be served from that cache rather than from memory."""
    sizes = [0]
    for entry in glob.glob(os.path.join(root, "index*", "size")):
        try:
            with open(entry) as f:
                text = f.read().strip()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:].upper(), 1)
        digits = text.rstrip("KkMmGg")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes)


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
