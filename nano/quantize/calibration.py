"""Calibration data: accepted as a DataLoader, tensors or (x, y) tuples; labels are dropped."""

from __future__ import annotations

from typing import Any

import torch

from nano.inference.data import as_batches, count_inputs, split_batch
from nano.inference.prepare import private_eval_copy
from nano.inference.structure import normalize_sample

MAX_CALIB_BATCHES = 64


def calibration_samples(model: torch.nn.Module, calib_data: Any, input_sample=None,
                        limit: int = MAX_CALIB_BATCHES) -> list[tuple[tuple, dict]]:
    """Calibration inputs as (args, kwargs) pairs, checked against the model.

    Raises ValueError naming ``calib_data`` when it is missing or empty, when
    its tensors do not match ``input_sample`` in dtype or non-batch shape, or
    when the model cannot run on it.
    """
    if calib_data is None:
        raise ValueError("calib_data is required for static INT8: pass a DataLoader, a tensor "
                         "or (x, y) tuples of representative inputs")
    try:
        batches = as_batches(calib_data, "calib_data", limit=limit)
    except (TypeError, ValueError) as e:
        raise ValueError(str(e)) from None
    n_inputs = count_inputs(model)
    samples = []
    for batch in batches:
        inputs, _ = split_batch(batch, n_inputs)
        samples.append(((), inputs) if isinstance(inputs, dict) else (tuple(inputs), {}))
    if input_sample is not None:
        ref_args, ref_kwargs = normalize_sample(input_sample)
        _check_like(samples[0], (ref_args, ref_kwargs))
    args, kwargs = samples[0]
    try:
        with torch.no_grad():
            private_eval_copy(model)(*args, **kwargs)
    except Exception as e:
        raise ValueError(f"the model cannot run on calib_data's first batch: "
                         f"{type(e).__name__}: {e}") from None
    return samples


def _check_like(sample, reference) -> None:
    got = [v for v in list(sample[0]) + list(sample[1].values()) if isinstance(v, torch.Tensor)]
    want = [v for v in list(reference[0]) + list(reference[1].values())
            if isinstance(v, torch.Tensor)]
    if len(got) != len(want):
        raise ValueError(f"calib_data batches have {len(got)} input tensor(s), input_sample has "
                         f"{len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g.dtype != w.dtype:
            raise ValueError(f"calib_data input {i} has dtype {g.dtype}, input_sample has "
                             f"{w.dtype}")
        if g.dim() != w.dim() or tuple(g.shape[1:]) != tuple(w.shape[1:]):
            raise ValueError(f"calib_data input {i} has shape {tuple(g.shape)}, input_sample has "
                             f"{tuple(w.shape)} (only the batch dimension may differ)")
