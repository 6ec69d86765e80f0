"""Turn what users pass as data (a DataLoader, a tensor, a tuple) into (inputs, target) batches."""

from __future__ import annotations

import inspect
from typing import Any, Iterable, Optional

import torch


def as_batches(data: Any, name: str, limit: Optional[int] = None) -> list:
    """A list of batches from a DataLoader/iterable of batches, a tensor, or one tuple batch."""
    if data is None:
        return []
    if isinstance(data, torch.Tensor):
        return [(data,)]
    if isinstance(data, (tuple, list)) and data and all(isinstance(d, torch.Tensor) for d in data):
        return [tuple(data)]
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, Iterable):
        raise TypeError(f"{name} must be a DataLoader, a tensor or a tuple of tensors, got "
                        f"{type(data).__name__}")
    batches = []
    for batch in data:
        batches.append(batch if isinstance(batch, (tuple, list, dict)) else (batch,))
        if limit is not None and len(batches) >= limit:
            break
    if not batches:
        raise ValueError(f"{name} is empty")
    return batches


def count_inputs(model: torch.nn.Module) -> int:
    """How many leading batch elements are model inputs: forward's required positional params."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return 1
    required = [p for p in params if p.default is p.empty and
                p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in params) and not required:
        return -1  # *args: every element is an input
    return max(1, len(required))


def split_batch(batch, n_inputs: int) -> tuple[Any, Any]:
    """(input sample, target or None) of one batch; dict batches are keyword inputs."""
    if isinstance(batch, dict):
        inputs = {k: v for k, v in batch.items() if k not in ("label", "labels", "target", "y")}
        target = next((batch[k] for k in ("labels", "label", "target", "y") if k in batch), None)
        return inputs, target
    batch = tuple(batch)
    if n_inputs < 0 or len(batch) <= n_inputs:
        return batch, None
    target = batch[n_inputs] if len(batch) == n_inputs + 1 else batch[n_inputs:]
    return batch[:n_inputs], target


def call(model, sample):
    """Call ``model`` on a sample as split_batch returns it."""
    if isinstance(sample, dict):
        return model(**sample)
    return model(*sample)
