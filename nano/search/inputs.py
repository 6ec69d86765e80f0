"""What one optimize() reads from the user's data before any candidate runs.

The first training batches calibrate INT8 (as many as quantize() uses; up to
MORE_CALIBRATION_BATCHES for the INT8 ladder's more_calib step, which only an
"all"/"grid" search climbs: a default one reads no more than it uses). Outputs are judged
on ``validation_data``, else on the training batches after the calibration ones, read
until there are enough samples for the promise (``calibration.held_out_read``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from nano.runtimes.calibration import (CALIBRATION_BATCHES, HELD_OUT_BATCHES,
                                       MORE_CALIBRATION_BATCHES, batch_rows,
                                       calibration_and_held_out, held_out_read)
from nano.runtimes.data import ForwardParams, as_batches, check_fits, sample_call, split_batch
from nano.runtimes.prepare import private_eval_copy
from nano.search.candidates import SearchData, reference_outputs
from nano.search.criterion import Criterion
from nano.search.judgement import OutputJudgement
from nano.search.measure import evaluate_metric, metric_style
from nano.search.search_options import SearchOptions


@dataclass
class SearchInputs:
    """The data of one search: what candidates share (``data``), the batches that built
    them, and what the accuracy column rests on."""

    data: SearchData
    calibration_pool: list  # every calibration input read (the build cache keys on it)
    baseline_accuracy: Optional[float]  # the original's metric value (with a metric)
    judged_rows: int  # how many held-out samples the judgement rests on
    judged_on_calibration: bool  # the only batch both calibrated and was judged on


def read_inputs(model: torch.nn.Module, training_data: Any, validation_data: Any,
                input_sample: Any, options: SearchOptions) -> SearchInputs:
    """Read and check the data (each mistake one line naming the argument), run the
    original on the held-out inputs, and decide how outputs are judged."""
    params = ForwardParams.of(model)
    given = None if input_sample is None else sample_call(model, input_sample)
    if given is not None:
        params = params.called_as(given)
    read = MORE_CALIBRATION_BATCHES if options.exhaustive else CALIBRATION_BATCHES
    if validation_data is not None:
        train = as_batches(training_data, "training_data", limit=read, params=params)
        calib_batches, held_batches = train, list[Any]()
    else:
        train = as_batches(training_data, "training_data", limit=read + HELD_OUT_BATCHES,
                           params=params, until=held_out_read(read))
        calib_batches, held_batches = calibration_and_held_out(train, read)
    pool = [split_batch(b, params, "training_data")[0] for b in calib_batches]
    calib, more_calib = pool[:CALIBRATION_BATCHES], pool[CALIBRATION_BATCHES:]
    sample = calib[0] if given is None else given
    check_fits(private_eval_copy(model), calib[0], "training_data")
    if input_sample is not None:
        check_fits(private_eval_copy(model), sample, "input_sample")
    if validation_data is not None:
        held_out = [split_batch(b, params, "validation_data")
                    for b in as_batches(validation_data, "validation_data", params=params)]
        check_fits(private_eval_copy(model), held_out[0][0], "validation_data")
    else:
        held_out = [split_batch(b, params, "training_data") for b in held_batches]
    eval_samples, targets = [s for s, _ in held_out], [t for _, t in held_out]
    references = reference_outputs(model, eval_samples)
    metric = options.metric
    baseline = None
    if metric is not None:
        baseline = evaluate_metric(private_eval_copy(model), metric, eval_samples, targets,
                                   validation_data)
    data = SearchData(model, sample, eval_samples, targets, references, metric,
                      validation_data, calib,
                      OutputJudgement.decide(model, references[0], options.accuracy),
                      more_calib=more_calib)
    if metric is not None and options.direction == "max" and metric_style(metric) == "pred":
        default = Criterion.parse(None)  # what the search's default pass holds the ladder to
        data.metric_drop = (default.value, default.kind)
    return SearchInputs(data, pool, baseline, sum(batch_rows(s) for s in eval_samples),
                        validation_data is None and len(train) == 1)
