"""The optimize() search: each candidate built, timed and checked in an isolated child."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TYPE_CHECKING

import torch

from nano.runtimes import registry
from nano.search import build_cache, isolation
from nano.runtimes.data import call
from nano.search.judgement import HeldOut, OutputJudgement, Verdict
from nano.search.measure import Latency, evaluate_metric, measure_latency, time_side_by_side
from nano.runtimes.methods import Method
from nano.runtimes.loading import load_model
from nano.runtimes.prepare import prepare, private_eval_copy

if TYPE_CHECKING:
    from nano.runtimes.model import AcceleratedModel

logger = logging.getLogger(__name__)


@dataclass
class SearchData:
    """What every candidate child shares (loaded once into the isolation zygote)."""

    model: torch.nn.Module
    sample: Any  # the input sample used for latency, as (args, kwargs)
    eval_samples: list  # inputs for accuracy
    targets: list  # labels for the metric (None entries without labels)
    references: list  # the original's outputs on eval_samples
    metric: Optional[Callable] = None
    validation_data: Any = None
    calib: Optional[list] = None  # calibration inputs (args, kwargs) for the INT8 candidates
    judgement: Optional[OutputJudgement] = None  # how outputs are judged without a metric
    metric_drop: Optional[tuple] = None  # (max drop, "relative"/"absolute") a pred-style metric allows
    more_calib: list = field(default_factory=list)  # training inputs past calib: more_calib steps

    def held_out(self) -> Optional[HeldOut]:
        """The held-out data as an INT8 build that measures accuracy takes it (judged by the
        metric where it is metric(pred, target) and higher is better)."""
        if self.judgement is None or not self.references:
            return None
        if self.metric is not None and self.metric_drop is not None:
            return HeldOut(self.eval_samples, self.references, self.judgement, self.metric,
                           self.targets, *self.metric_drop)
        return HeldOut(self.eval_samples, self.references, self.judgement)


@dataclass
class CandidateTask:
    """One candidate's settings."""

    method: Method
    thread_num: int
    dynamic_axes: Any
    latency_sample_num: int
    latency_budget: float
    best_median: Optional[float]
    early_stop_factor: float
    save_dir: Optional[str]
    conversion_cache: Optional[str] = None  # shared by this search's candidates
    cache_entry: Optional[str] = None  # where the on-disk build cache keeps this candidate


@dataclass
class CandidateResult:
    """One row of the search."""

    method: Method
    status: str  # ok, drift, slow, unavailable, failed, crashed, timeout, memory, skipped
    detail: str = ""
    latency: Optional[Latency] = None
    accuracy: Optional[float] = None
    output_error: Optional[float] = None  # the judgement's error of the output furthest off
    build_seconds: Optional[float] = None
    cost_seconds: float = 0.0
    saved_to: Optional[str] = None
    extra: dict = field(default_factory=dict)
    verdict: Optional[Verdict] = None  # each output judged against the original's

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def usable(self) -> bool:
        """Ran and was timed fully (drifting outputs included; filters decide on those)."""
        return self.status in ("ok", "drift") and self.latency is not None


def build_candidate(method: Method, model: torch.nn.Module, sample: tuple, thread_num: int,
                    dynamic_axes: Any, calib: Optional[list], saved_to: Optional[str] = None,
                    conversion_cache: Optional[str] = None,
                    held_out: Optional[HeldOut] = None,
                    more_calib: Optional[list] = None) -> AcceleratedModel:
    """A candidate's model: loaded from the directory the search saved it in, or built
    (reusing the search's checked conversions; ``held_out`` for INT8 that measures which
    layers cost accuracy; ``more_calib``: the training inputs past ``calib``, which a
    more_calibration step calibrates on too)."""
    if saved_to:
        return load_model(saved_to, model)
    if more_calib and method.option_dict.get("more_calibration"):
        calib = [*(calib or []), *more_calib]
    inputs = prepare(model, sample, thread_num, dynamic_axes, calib)
    inputs.conversion_cache = conversion_cache
    inputs.held_out = held_out
    return registry.build(method, inputs)


def evaluate_candidate(task: CandidateTask) -> dict:
    """Run in the isolated child: build, time, check accuracy, save. Returns plain data."""
    data: SearchData = isolation.SHARED
    torch.set_num_threads(task.thread_num)
    start = time.perf_counter()
    model = _cached(task, data.model)
    reused = model is not None
    if model is None:
        try:
            model = build_candidate(task.method, data.model, data.sample, task.thread_num,
                                    task.dynamic_axes, data.calib,
                                    conversion_cache=task.conversion_cache,
                                    held_out=data.held_out(), more_calib=data.more_calib)
        except Exception as e:
            # only the build's failure is kept: the key covers what a build depends on, not
            # the metric or the validation data that timing and judging use
            _remember_failure(task, e)
            raise
    build_seconds = time.perf_counter() - start
    args, kwargs = data.sample
    latency = measure_latency(lambda: model(*args, **kwargs), task.latency_sample_num,
                              task.latency_budget, slower_than=task.best_median,
                              early_stop_factor=task.early_stop_factor)
    result = {"build_seconds": build_seconds, "latency": latency, "reused": reused}
    if latency.stopped_early:
        if not reused:  # too slow this time, but a later search may judge it again
            _keep_in_cache(task, model)
        return result
    if data.metric is not None:
        result["accuracy"] = evaluate_metric(model, data.metric, data.eval_samples, data.targets,
                                             data.validation_data)
    if data.references and data.judgement is not None:
        with torch.no_grad():
            outputs = [call(model, s) for s in data.eval_samples]
        result["verdict"] = data.judgement.judge(outputs, data.references)
    if task.save_dir:
        # saved where the search can load it again; a state-dict kind needs the user's module
        # to load, so it is not saved, only weighed
        if not model.needs_model_to_load:
            model.save(task.save_dir)
            result["saved_to"] = task.save_dir
            result["artifact_bytes"] = directory_bytes(task.save_dir)
            if not reused:
                _keep_in_cache(task, model, saved=True)
        else:
            result["artifact_bytes"] = _state_dict_bytes(model)
    result["peak_rss_bytes"] = isolation.peak_rss_bytes()
    return result


def _keep_in_cache(task: CandidateTask, model: AcceleratedModel, saved: bool = False) -> None:
    """Store the built candidate in the build cache (if it has an entry and is saved by
    itself, not as a state dict needing the user's module); ``saved``: already in
    ``task.save_dir``."""
    if not task.cache_entry or not task.save_dir or model.needs_model_to_load:
        return
    try:
        if not saved:
            model.save(task.save_dir)
        build_cache.store(task.save_dir, task.cache_entry)
    except OSError as e:  # a full or read-only cache costs the next run only
        logger.warning("could not keep %s in the build cache: %s", task.method.name, e)


def _remember_failure(task: CandidateTask, error: Exception) -> None:
    from nano.runtimes.error_summary import summarize_error

    if not task.cache_entry:
        return
    try:
        build_cache.remember_failure(task.cache_entry,
                                     f"{type(error).__name__}: {summarize_error(error, 400)}")
    except OSError as e:
        logger.warning("could not note %s's failure in the build cache: %s", task.method.name,
                       e)


def _cached(task: CandidateTask, module: torch.nn.Module) -> Optional[AcceleratedModel]:
    """The candidate loaded from the build cache, or None (no entry, or one that does not
    load: that one is removed, to be built and stored again)."""
    if not task.cache_entry or not os.path.isdir(task.cache_entry):
        return None
    try:
        model = load_model(task.cache_entry, module, thread_num=task.thread_num)
        build_cache.touch(task.cache_entry)
        return model
    except Exception as e:  # a damaged or stale entry is never used
        logger.info("dropping the cached %s (%s)", task.method.name, e)
        shutil.rmtree(task.cache_entry, ignore_errors=True)
        return None


def _state_dict_bytes(model: AcceleratedModel) -> Optional[int]:
    """What save() writes for a state-dict kind, counted without writing it: its tensors'
    bytes (the file adds a few KB of pickle around them)."""
    source_state = getattr(model, "source_state", None)
    if source_state is None:
        return None
    return sum(t.numel() * t.element_size() for t in source_state().values()
               if isinstance(t, torch.Tensor))


def directory_bytes(directory: str) -> int:
    """The size of every file under ``directory``."""
    return sum(os.path.getsize(os.path.join(root, f))
               for root, _, files in os.walk(directory) for f in files)


def reference_outputs(model: torch.nn.Module, samples: list) -> list:
    """The original model's outputs, computed on a private eval copy (the user's stays as is)."""
    private = private_eval_copy(model)
    with torch.no_grad():
        return [call(private, s) for s in samples]


def _failure(method: Method, detail: str) -> str:
    """A failed build's row text: a converting runtime's failure says so."""
    return f"failed to convert: {detail}" if registry.backend_for(method).SPEC.converts \
        else detail


def run_candidate(zygote: isolation.Zygote, task: CandidateTask, timeout: float,
                  memory_limit: Optional[int]) -> CandidateResult:
    """Run one candidate in isolation and turn how it ended into a result row."""
    reason = registry.unavailable_reason(task.method)
    if reason:
        logger.debug("%s unavailable: %s", task.method.name, reason)
        return CandidateResult(task.method, "unavailable", reason)
    known = build_cache.remembered_failure(task.cache_entry) if task.cache_entry else None
    if known:
        return CandidateResult(task.method, "failed", f"{_failure(task.method, known)}; "
                               "remembered from an earlier search (build cache)")
    outcome = zygote.run(evaluate_candidate, task, timeout, memory_limit)
    logger.debug("%s: %s in %.1f s %s", task.method.name, outcome.status, outcome.seconds,
              outcome.detail)
    if outcome.status != "ok":
        detail = outcome.detail
        if outcome.status == "failed":
            detail = _failure(task.method, detail)
        return CandidateResult(task.method, outcome.status, detail, cost_seconds=outcome.seconds)
    r = outcome.result
    latency: Latency = r["latency"]
    verdict: Optional[Verdict] = r.get("verdict")
    precision = task.method.precision
    row = CandidateResult(task.method, "ok", "", latency, r.get("accuracy"),
                          verdict.error(precision) if verdict else None, r["build_seconds"],
                          outcome.seconds, r.get("saved_to"), verdict=verdict)
    for key in ("artifact_bytes", "peak_rss_bytes"):
        if r.get(key) is not None:
            row.extra[key] = r[key]
    notes = []
    if latency.stopped_early:
        row.status = "slow"
        notes.append(f"stopped early: over {task.early_stop_factor:g}x the best median so far "
                     f"after 5 calls")
    elif row.accuracy is None and verdict is not None and verdict.shortfall(precision):
        row.status = "drift"
        notes.append(str(verdict.shortfall(precision)))
    if r.get("reused"):
        notes.append("built earlier: loaded from the build cache")
    row.detail = "; ".join(notes)
    return row


# The final round: candidates within FINAL_WINDOW of the best of their precision (at most
# FINAL_PER_PRECISION of them) are timed again side by side. Each was timed alone, in its
# own time window, and a burst of machine noise during one window can make it look 1.5x
# slower than it is (seen here: OpenVINO INT8 54.7 ms in the search, 36-39 ms side by side).
FINAL_WINDOW = 1.5
FINAL_PER_PRECISION = 4


@dataclass
class FinalRoundTask:
    """The finalists to time together, and how each one is rebuilt in the child."""

    methods: list
    saved_to: list  # per method: its saved directory, or None to build it again
    thread_num: int
    dynamic_axes: Any


def finalists(results: list, passes: Callable[[CandidateResult], bool] = lambda r: True
              ) -> list:
    """The rows worth timing again side by side, with the original (the speed-ups are taken
    from this round); empty when no other row ran. Only rows that ``passes`` (the default
    accuracy judgement) count: a fast INT8 row that fails it must not set the window that
    keeps a slower right one out."""
    chosen = []
    for precision in sorted({r.method.precision for r in results}):
        rows = sorted((r for r in results if r.method.precision == precision
                       and r.usable and r.name != "original" and passes(r)),
                      key=lambda r: r.latency.median)
        if rows:
            limit = rows[0].latency.median * FINAL_WINDOW
            chosen += [r for r in rows[:FINAL_PER_PRECISION] if r.latency.median <= limit]
    original = [r for r in results if r.name == "original" and r.usable]
    return original + chosen if chosen and original else []


def time_finalists(task: FinalRoundTask) -> dict:
    """Run in the isolated child: load (or rebuild) every finalist as a user's load() would,
    timing that and its first call (the cold start), then time them together."""
    data: SearchData = isolation.SHARED
    torch.set_num_threads(task.thread_num)
    args, kwargs = data.sample
    fns, cold = {}, {}
    for method, saved in zip(task.methods, task.saved_to):
        start = time.perf_counter()
        model = build_candidate(method, data.model, data.sample, task.thread_num,
                                task.dynamic_axes, data.calib, saved,
                                held_out=data.held_out(), more_calib=data.more_calib)
        with torch.no_grad():
            model(*args, **kwargs)
        cold[method.name] = time.perf_counter() - start
        fns[method.name] = lambda model=model: model(*args, **kwargs)
    with torch.no_grad():
        return {"side_by_side": time_side_by_side(fns, round_seconds=final_round_slice(len(fns))),
                "cold_start": cold}


# The final round's timing takes about this long in all (its loads and warm-up calls
# aside), shared among the finalists: 0.2 s per finalist and round for up to 3 of them,
# down to 0.05 s (at least 3 calls each) for 12 or more.
FINAL_ROUND_SECONDS = 3.0


def final_round_slice(finalists: int, rounds: int = 5) -> float:
    """Seconds each finalist is timed for in each of the final round's ``rounds``."""
    return min(0.2, max(0.05, FINAL_ROUND_SECONDS / (rounds * max(finalists, 1))))


def speedup(row: CandidateResult, original: Optional[CandidateResult]) -> Optional[float]:
    """How many times faster than the original ``row`` ran: from the side-by-side round when
    both were in it (each alone was timed in its own window, and a busy machine in one
    window made a 6x model read 36x), else from each one's own median."""
    if original is None or original.latency is None or row.latency is None:
        return None
    if "side_by_side" in row.extra and "side_by_side" in original.extra:
        return original.extra["side_by_side"] / row.extra["side_by_side"]
    return original.latency.median / row.latency.median


def ranked(rows: list) -> list:
    """``rows`` fastest first. Each row's own median decides, except among the finalists
    within FINAL_WINDOW of the fastest row: those were timed together, in one window, so
    their side-by-side times order them, ahead of the rest."""
    by_median = sorted(rows, key=lambda r: r.latency.median)
    if not by_median or "side_by_side" not in by_median[0].extra:
        return by_median
    limit = by_median[0].latency.median * FINAL_WINDOW
    close = [r for r in by_median if "side_by_side" in r.extra and r.latency.median <= limit]
    rest = [r for r in by_median if "side_by_side" not in r.extra or r.latency.median > limit]
    return sorted(close, key=lambda r: r.extra["side_by_side"]) + rest


def run_final_round(zygote: isolation.Zygote, rows: list, thread_num: int, dynamic_axes: Any,
                    timeout: float, memory_limit: Optional[int]) -> Optional[str]:
    """Time ``rows`` side by side and record each one's median in ``extra["side_by_side"]``;
    returns why it could not be done, or None."""
    task = FinalRoundTask([r.method for r in rows], [r.saved_to for r in rows], thread_num,
                          dynamic_axes)
    outcome = zygote.run(time_finalists, task, timeout, memory_limit)
    if outcome.status != "ok":
        return f"{outcome.status}: {outcome.detail}"
    for r in rows:
        r.extra["side_by_side"] = outcome.result["side_by_side"][r.name]
        r.extra["cold_start"] = outcome.result["cold_start"][r.name]
    return None


def default_memory_limit() -> int:
    """Kill a candidate whose memory passes 75% of this machine's RAM."""
    import psutil

    return int(psutil.virtual_memory().total * 0.75)


def candidate_dir(root: str, method: Method) -> str:
    return os.path.join(root, method.name)
