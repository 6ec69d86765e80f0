"""Latency and accuracy measurement, done the same way for every candidate."""

from __future__ import annotations

import inspect
import math
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from nano.errors import MetricError, NanoTypeError
from nano.runtimes.data import call
from nano.runtimes.structure import concat_values

@dataclass
class Latency:
    """Per-call latency statistics in seconds."""

    median: float
    p25: float
    p75: float
    samples: int
    stopped_early: bool = False

    @property
    def spread(self) -> float:
        """Interquartile range."""
        return self.p75 - self.p25


def _quantile(sorted_values: list, q: float) -> float:
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def measure_latency(fn: Callable[[], Any], max_samples: int = 100, time_budget: float = 10.0,
                    warmup: int = 3, slower_than: Optional[float] = None,
                    early_stop_factor: float = 3.0) -> Latency:
    """Time ``fn`` after ``warmup`` calls: up to ``max_samples`` calls or ``time_budget`` s.

    With ``slower_than`` (the best median so far), stop after 5 calls when the
    median is over ``early_stop_factor`` times it: such a candidate cannot win.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + time_budget
    stopped = False
    while len(times) < max_samples:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 5 and time.perf_counter() > deadline:
            break
        if (slower_than and len(times) == 5
                and statistics.median(times) > early_stop_factor * slower_than):
            stopped = True
            break
    ordered = sorted(times)
    return Latency(statistics.median(ordered), _quantile(ordered, 0.25), _quantile(ordered, 0.75),
                   len(times), stopped)


def time_side_by_side(fns: dict, rounds: int = 5, round_seconds: float = 0.2,
                      warmup: int = 3, seed: int = 0) -> dict:
    """Median seconds per call of each ``fns`` entry, timed in the same window.

    Each round times every function for about ``round_seconds`` in a freshly
    shuffled order (a runtime's threads keep spinning briefly after a call,
    so a fixed order would always slow the same one down); the result is the
    median of the round medians, so a burst of machine noise hits all alike.
    """
    calls = {}
    for name, fn in fns.items():
        for _ in range(warmup):  # the first calls may compile: not part of the estimate
            fn()
        start = time.perf_counter()
        fn()
        per_call = time.perf_counter() - start
        calls[name] = max(3, min(200, math.ceil(round_seconds / max(per_call, 1e-6))))
    order = list(fns)
    shuffle = random.Random(seed).shuffle
    medians: dict = {name: [] for name in fns}
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            times = []
            for _ in range(calls[name]):
                t = time.perf_counter()
                fns[name]()
                times.append(time.perf_counter() - t)
            medians[name].append(statistics.median(times))
    return {name: statistics.median(m) for name, m in medians.items()}


def metric_style(metric: Callable) -> str:
    """"model" for ``metric(model, data)``, else "pred" for ``metric(pred, target)``."""
    try:
        params = list(inspect.signature(metric).parameters)
    except (TypeError, ValueError):
        return "pred"
    return "model" if params and params[0] == "model" else "pred"


def check_metric(metric: Any) -> None:
    """A one-line NanoTypeError unless ``metric`` is a callable taking ``(pred, target)`` or
    ``(model, data)``: found before any model is built, not at its first evaluation."""
    if not callable(metric):
        raise NanoTypeError("metric must be callable: metric(pred, target) or "
                            "metric(model, data)")
    try:
        signature = inspect.signature(metric)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    if _binds(signature, 2) or (metric_style(metric) == "model" and _binds(signature, 1)):
        return
    name = getattr(metric, "__name__", type(metric).__name__)
    raise NanoTypeError(f"metric must take two arguments, metric(pred, target) or "
                        f"metric(model, data) (or metric(model)); {name} takes {signature}")


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True


def evaluate_metric(model: Callable[..., Any], metric: Callable, samples: list, targets: list,
                    validation_data: Any = None) -> float:
    """Run ``metric`` on ``model``; raise a clear error if it fails or returns no number."""
    try:
        if metric_style(metric) == "model":
            # BigDL-Nano's metric(model) form takes no data
            takes_data = _binds(inspect.signature(metric), 2)
            value = metric(model, validation_data) if takes_data else metric(model)
        else:
            with torch.no_grad():
                preds = [call(model, s) for s in samples]
            value = metric(concat_values(preds), concat_values(targets))
    except Exception as e:
        raise MetricError(f"metric raised {type(e).__name__}: {e}") from e
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise NanoTypeError(f"metric must return a number, got {value!r}")
    return float(value)
