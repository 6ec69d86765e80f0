"""Calibration data: accepted as a DataLoader, tensors or (x, y) tuples; labels are dropped."""

from __future__ import annotations

from typing import Any, Callable

import torch

from nano.errors import DataMismatch
from nano.runtimes.data import ForwardParams, as_batches, check_fits, sample_call, split_batch
from nano.runtimes.prepare import private_eval_copy
from nano.runtimes.structure import flatten_output

# How many batches calibrate INT8, in quantize() and optimize() alike. Measured
# (benchmarks/calibration_batches.py): from 1 to 64 batches of 8 the accuracy of every
# quantizer moved by less than 0.002 (digits CNN: no drop at all), while 64 batches took
# 1.3-1.4x as long as 16 on a ResNet-18; a caller wanting more passes sample_size.
CALIBRATION_BATCHES = 16
# optimize()'s INT8 ladder calibrates on up to this many training batches in its
# "more_calib" step, where the user gave that much data (an "all"/"grid" search only: on
# the benchmark above more batches moved accuracy by < 0.002).
MORE_CALIBRATION_BATCHES = 64

# Without validation_data, optimize() judges outputs on training batches calibration did
# not see, read past the calibration batches until they hold MIN_HELD_OUT_SAMPLES rows, or
# HELD_OUT_BATCHES batches. A verdict on 8 images was too weak: an INT8 EfficientNet-lite0
# agreed with the original on 8 of 8 held-out images and on 56 of 64 other crops (0.875,
# where the judgement promises 0.95); with n rows all agreeing, the 95% lower bound on the
# agreement is about 1 - 3/n.
MIN_HELD_OUT_SAMPLES = 64
HELD_OUT_BATCHES = 64


def batch_rows(batch: Any) -> int:
    """How many samples a batch holds: the first dimension of its first tensor (1 if none)."""
    tensors = flatten_output(batch)
    return int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1


def _enough(held: list) -> bool:
    return (len(held) >= HELD_OUT_BATCHES
            or sum(batch_rows(b) for b in held) >= MIN_HELD_OUT_SAMPLES)


def held_out_read(calibration: int) -> Callable[[list], bool]:
    """For ``as_batches(until=...)``: stop reading once the batches past the first
    ``calibration`` hold enough rows to judge on (or are HELD_OUT_BATCHES batches)."""
    return lambda batches: _enough(batches[calibration:])


def calibration_and_held_out(batches: list, calibration: int = CALIBRATION_BATCHES
                             ) -> tuple[list, list]:
    """``(calibration batches, held-out batches)`` of training data read with
    ``held_out_read(calibration)``: the batches past the first ``calibration``; where the
    data ran out before those were enough, at least the last quarter. A single batch is
    both: there is nothing else to judge on."""
    n = len(batches)
    if n <= 1:
        return batches, batches
    held = n - calibration
    if held < 1 or not _enough(batches[calibration:]):
        held = max(1, n // 4, held)
    return batches[:n - held], batches[n - held:]


def calibration_samples(model: torch.nn.Module, calib_data: Any, input_sample: Any = None,
                        limit: int = CALIBRATION_BATCHES) -> list[tuple[tuple, dict]]:
    """Calibration inputs as (args, kwargs) pairs, checked against the model.

    Raises ``DataMismatch`` (a ValueError) naming ``calib_data`` when it is
    missing or empty, when its tensors do not match ``input_sample`` in dtype or
    non-batch shape, or when the model cannot run on it.
    """
    if calib_data is None:
        raise DataMismatch("calib_data is required for static INT8: pass a DataLoader, a "
                           "tensor or (x, y) tuples of representative inputs")
    params = ForwardParams.of(model)
    reference = None if input_sample is None else sample_call(model, input_sample)
    if reference is not None:
        params = params.called_as(reference)
    try:
        batches = as_batches(calib_data, "calib_data", limit=limit, params=params)
    except (TypeError, ValueError) as e:
        raise DataMismatch(str(e)) from None
    samples = [split_batch(batch, params, "calib_data")[0] for batch in batches]
    if reference is not None:
        _check_like(samples[0], reference)
    check_fits(private_eval_copy(model), samples[0], "calib_data")
    return samples


def _check_like(sample, reference) -> None:
    got, want = flatten_output(sample), flatten_output(reference)
    if len(got) != len(want):
        raise DataMismatch(f"calib_data does not fit the model's inputs: its batches have "
                           f"{len(got)} input tensor(s), input_sample has {len(want)}")
    for i, (g, w) in enumerate(zip(got, want)):
        if g.dtype != w.dtype:
            raise DataMismatch(f"calib_data does not fit the model's inputs: input {i} has "
                               f"dtype {g.dtype}, input_sample has {w.dtype}")
        if g.dim() != w.dim() or tuple(g.shape[1:]) != tuple(w.shape[1:]):
            raise DataMismatch(f"calib_data does not fit the model's inputs: input {i} has "
                               f"shape {tuple(g.shape)}, input_sample has {tuple(w.shape)} "
                               f"(only the batch dimension may differ)")
