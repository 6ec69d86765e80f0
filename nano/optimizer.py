"""``InferenceOptimizer``: trace, save/load, and optimize() that picks the fastest runtime."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from types import MappingProxyType
from typing import (Any, Callable, IO, Iterator, Mapping, Optional, Sequence, TYPE_CHECKING,
                    Union)

import torch

from nano.errors import NanoTypeError, NanoValueError, SearchFailed
from nano.inference import backends, compat, int8_ladder, report
from nano.inference.calibration import (CALIBRATION_BATCHES, HELD_OUT_BATCHES,
                                        MIN_HELD_OUT_SAMPLES, MORE_CALIBRATION_BATCHES,
                                        batch_rows, calibration_and_held_out, held_out_read)
from nano.inference.data import (ForwardParams, as_batches, check_fits, sample_call,
                                 split_batch)
from nano.inference.criterion import Criterion, output_error_limit
from nano.inference.isolation import Zygote
from nano.launcher.termination import signals_unwind
from nano.inference.judgement import HeldOut, OutputJudgement, check_judgement_name
from nano.inference.measure import evaluate_metric, metric_style
from nano.inference.methods import (Method, get_method, normalize_accelerator,
                                    normalize_precision, select_methods)
from nano.inference.model import AcceleratedModel, check_thread_num, load_model, save_model
from nano.inference.prepare import prepare, private_eval_copy
from nano.inference.search_plan import SearchPlan
from nano.inference.search import (CandidateResult, CandidateTask, SearchData, build_candidate,
                                   candidate_dir, default_memory_limit, finalists, ranked,
                                   reference_outputs, run_candidate, run_final_round, speedup)

if TYPE_CHECKING:
    from nano.multiprocess.pool import MultiInstanceModel


def build_method(model: torch.nn.Module, method: Method, input_sample: Any,
                 thread_num: Optional[int] = None,
                 dynamic_axes: Union[bool, dict] = True) -> AcceleratedModel:
    """Build one method in this process (no isolation)."""
    return backends.build(method, prepare(model, input_sample, thread_num, dynamic_axes))




# With a time_budget, a candidate still gets this long even when less of the budget is left,
# so that the last one tried is not cut off before it could show anything.
MIN_CANDIDATE_SECONDS = 30.0


def _within_budget(timeout: float, time_budget: Optional[float], started: float) -> float:
    """A step's time limit: ``timeout``, cut to what is left of ``time_budget`` (but not
    below MIN_CANDIDATE_SECONDS)."""
    if time_budget is None:
        return timeout
    left = time_budget - (time.monotonic() - started)
    return min(timeout, max(left, MIN_CANDIDATE_SECONDS))


def _build_cache(cache_dir: Optional[str], no_cache: bool, model: torch.nn.Module, sample: tuple,
                 dynamic_axes: Any, calib: list) -> Callable[[Method], Optional[str]]:
    """method -> its build-cache entry for this search (None when caching is off)."""
    from nano.inference import build_cache
    from nano.launcher.writable import unwritable_reason

    root = build_cache.cache_root(cache_dir, no_cache)
    if root is not None:
        reason = unwritable_reason(root)
        if reason:
            if cache_dir:
                raise NanoValueError(f"cache_dir {cache_dir!r} cannot be written: {reason}")
            warnings.warn(f"optimize(): no build cache ({root}: {reason}); pass cache_dir= "
                          f"or no_cache=True", stacklevel=3)
            root = None
    if root is None:
        return lambda method: None
    key = build_cache.model_key(model, sample, dynamic_axes, calib)
    build_cache.evict(root, build_cache.max_bytes(), keep=os.path.join(root, key))
    return lambda method: build_cache.entry_dir(root, key, method)


def _check_layout_options(acc: str, use_ipex: bool, channels_last: bool) -> None:
    """use_ipex and channels_last only where a backend builds them (read from the specs)."""
    fp = [s for s in backends.specs() if s.quantizer is None]
    if use_ipex and acc not in {s.accelerator for s in fp if s.use_ipex}:
        names = [_spelled(s.accelerator) for s in fp if s.use_ipex]
        raise NanoValueError(f"use_ipex works with accelerator {' or '.join(names)}, not "
                             f"{_spelled(acc)}")
    if channels_last and acc not in {s.accelerator for s in fp if s.channels_last}:
        names = list(dict.fromkeys(_spelled(s.accelerator) for s in fp if s.channels_last))
        raise NanoValueError(f"channels_last applies to accelerator {', '.join(names)}; "
                             f"{acc} picks its own memory layout")


def _spelled(acc: str) -> str:
    return "None" if acc == "pytorch" else repr(acc)


def _original_of(model, function: str) -> torch.nn.Module:
    """The module to build from: ``model``, or the original an accelerated model came from."""
    if isinstance(model, AcceleratedModel):
        if model.original is None:
            raise NanoValueError(
                f"{function}() needs the original nn.Module: this {model.method.name} model "
                f"was loaded without it. Pass the module you built it from, or load it with "
                f"InferenceOptimizer.load(path, model=original) first")
        return model.original
    if not isinstance(model, torch.nn.Module):
        raise NanoTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


class ResultView(Mapping):
    """One row of ``optimized_model_dict``: read-only, its model built on first access."""

    def __init__(self, optimizer: "InferenceOptimizer", row: CandidateResult):
        self._optimizer, self._row = optimizer, row
        latency = row.latency.median * 1e3 if row.latency else None
        self._data = {"status": row.status, "latency": latency, "accuracy": row.accuracy,
                      "output_error": row.output_error, "model": None}

    def __getitem__(self, key):
        if key == "model":
            return self._optimizer.get_model(self._row.name) if self._row.usable else None
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


class InferenceOptimizer:
    """Find, build, save and load the fastest equivalent of a PyTorch model on this CPU.

    The static methods (``trace``, ``quantize``, ``save``, ``load``) build one
    model in this process; an instance's ``optimize()`` tries every method
    isolated in child processes and ``summary()`` / ``get_best_model()`` report
    and pick from the results.
    """

    def __init__(self):
        self.results: list[CandidateResult] = []
        self._model = None
        self._sample = None
        self._thread_num = None
        self._dynamic_axes = True
        self._workdir = None
        self._built: dict = {}
        self._calib: Optional[list] = None
        self._more_calib: list = []
        self._metric = None
        self._direction = "max"
        self._total_seconds = 0.0
        self._plan: Optional[SearchPlan] = None
        self._judgement: Optional[OutputJudgement] = None
        self._judged_on_calibration = False
        self._judged_rows = 0
        self._held_out: Optional[HeldOut] = None

    @staticmethod
    def trace(model: torch.nn.Module, input_sample: Any = None, accelerator: Optional[str] = None,
              use_ipex: bool = False, channels_last: bool = False,
              thread_num: Optional[int] = None, dynamic_axes: Union[bool, dict] = True,
              onnxruntime_session_options: Any = None, openvino_config: Optional[dict] = None,
              jit_method: Optional[str] = None, jit_strict: Optional[bool] = None,
              output_tensors: bool = True, example_kwarg_inputs: Optional[dict] = None,
              device: str = "CPU", **bigdl_options: Any) -> AcceleratedModel:
        """Return ``model`` running on ``accelerator`` (None: plain PyTorch, "jit", "compile",
        "onnxruntime", "openvino") at fp32.

        ``input_sample`` is one example input: a tensor, a tuple of positional
        inputs (tensors may be nested in tuples, lists and dicts), a dict of
        keyword inputs, ``(args, kwargs)``, or a DataLoader (its first batch);
        ``example_kwarg_inputs`` adds keyword inputs. Plain PyTorch, "jit"
        (scripted) and "compile" need no sample. ``dynamic_axes=True`` lets dim 0
        vary, False fixes every shape, ``{name: [axes]}`` chooses per input.
        The result is checked against the original on fresh inputs; a trace that
        differs raises ``nano.errors.TraceError``. The user's model is not
        modified, and its attributes stay reachable on the result.
        ``output_tensors=False`` returns numpy arrays; ``openvino_config``,
        ``onnxruntime_session_options``, ``jit_method`` ("trace"/"script") and
        ``jit_strict`` tune one runtime each.
        """
        compat.check_options("trace", bigdl_options)
        compat.check_device(device)
        input_sample, accelerator = compat.sample_and_accelerator(input_sample, accelerator)
        model = _original_of(model, "trace")
        acc = normalize_accelerator(accelerator)
        _check_layout_options(acc, use_ipex, channels_last)
        method = Method(acc, "fp32", channels_last, use_ipex).with_options(
            **compat.runtime_options(acc, jit_method, jit_strict, openvino_config,
                                     onnxruntime_session_options))
        sample = compat.with_kwarg_inputs(input_sample, example_kwarg_inputs)
        if sample is None:
            built = backends.build_without_sample(method, model, thread_num)
        else:
            built = build_method(model, method, sample, thread_num, dynamic_axes)
        built.output_tensors = bool(output_tensors)
        return built.attach_original(model)

    @staticmethod
    def quantize(model: torch.nn.Module, precision: str = "int8",
                 accelerator: Optional[str] = None, use_ipex: bool = False, calib_data: Any = None,
                 calib_dataloader: Any = None, eval_func: Optional[Callable] = None,
                 metric: Optional[Callable] = None, accuracy_criterion: Any = None,
                 approach: str = "static", method: Optional[str] = None,
                 tuning_strategy: Optional[str] = None, timeout: Optional[float] = None,
                 max_trials: Optional[int] = None, input_sample: Any = None,
                 channels_last: bool = False, thread_num: Optional[int] = None,
                 device: str = "CPU", onnxruntime_session_options: Any = None,
                 openvino_config: Optional[dict] = None, jit_strict: Optional[bool] = None,
                 jit_method: Optional[str] = None, dynamic_axes: Union[bool, dict] = True,
                 sample_size: Optional[int] = None, output_tensors: bool = True,
                 example_kwarg_inputs: Optional[dict] = None, validation_data: Any = None,
                 **bigdl_options: Any) -> AcceleratedModel:
        """Quantize ``model`` for ``accelerator`` (None/"compile": PT2E + inductor,
        "onnxruntime", "openvino"); ``precision`` "int8", or "bf16"/"fp16" where supported
        (bf16 with None or "jit" needs no data at all).

        ``calib_data`` (or BigDL's ``calib_dataloader``): a DataLoader, tensors
        or (x, y) tuples (labels ignored for calibration), its first 16 batches;
        ``sample_size`` sets how many samples calibrate instead. ``approach``: "static" or "dynamic"
        (dynamic needs only ``input_sample``). ``method``: the ONNX Runtime
        flavour, "qdq" (default), "qlinear" or "integer". With ``metric``
        (``metric(pred, target)``, or ``metric(model, data)``; BigDL's
        ``eval_func(model)`` too), evaluated on ``validation_data`` or on
        ``calib_data`` when it has labels, configurations are tried until one is
        within ``accuracy_criterion`` of the original -- a number (relative
        drop, 0.01 = 1%, the default) or {"absolute": x} / {"relative": x}
        with optional "higher_is_better" -- and the fastest passing one is
        returned; at most ``max_trials`` configurations, within ``timeout``
        seconds. If none passes, ``nano.quantize.AccuracyCriterionError``
        reports every trial and carries ``best_model``. An accelerated model is
        quantized from the original it was built from.
        """
        from nano.quantize.api import quantize

        compat.check_options("quantize", bigdl_options)
        compat.check_device(device)
        if not isinstance(use_ipex, bool):
            raise NanoTypeError(f"use_ipex must be True or False, got a {type(use_ipex).__name__}"
                                f"; quantize() takes BigDL-Nano's order (model, precision, "
                                f"accelerator, use_ipex, calib_data, ...): pass calib_data= "
                                f"by keyword")
        compat.check_tuning_strategy(tuning_strategy)
        if calib_dataloader is not None:
            if calib_data is not None:
                raise NanoValueError("pass calib_data or calib_dataloader, not both")
            calib_data = calib_dataloader
        if eval_func is not None:
            if metric is not None:
                raise NanoValueError("pass metric or eval_func, not both")
            metric = compat.eval_func_metric(eval_func)
        model = _original_of(model, "quantize")
        built = quantize(
            model, precision=precision, accelerator=accelerator, calib_data=calib_data,
            metric=metric, accuracy_criterion=accuracy_criterion, approach=approach,
            method=method, max_trials=max_trials, timeout=timeout, thread_num=thread_num,
            input_sample=compat.with_kwarg_inputs(input_sample, example_kwarg_inputs),
            validation_data=validation_data, use_ipex=use_ipex, channels_last=channels_last,
            dynamic_axes=dynamic_axes, sample_size=sample_size,
            runtime=dict(jit_method=jit_method, jit_strict=jit_strict,
                         openvino_config=openvino_config,
                         onnxruntime_session_options=onnxruntime_session_options))
        built.output_tensors = bool(output_tensors)
        return built.attach_original(model)

    @staticmethod
    def save(model: torch.nn.Module, path: str, compression: Optional[str] = None) -> None:
        """Save a model to directory ``path`` (metadata + standard artifacts).

        A plain ``nn.Module`` is saved as an ``original`` model (its state
        dict). ``compression="bf16"`` stores state-dict weights in bf16.
        """
        save_model(model, path, compression)

    @staticmethod
    def load(path: str, model: Optional[torch.nn.Module] = None, input_sample: Any = None,
             device: str = "CPU") -> AcceleratedModel:
        """Load a directory written by ``save``. ``model`` (the original module) is needed
        only for kinds saved as state dicts (plain PyTorch, compile, IPEX); the error says
        so. Given, its attributes are reachable on the loaded model. ``input_sample`` is
        accepted for BigDL-Nano code: saved models need none."""
        compat.check_device(device)
        return load_model(path, model)

    @staticmethod
    def to_multi_instance(model: torch.nn.Module, num_processes: int,
                          cores_per_process: Optional[int] = None,
                          cpu_for_each_process: Optional[Sequence[Sequence[int]]] = None,
                          timeout: Optional[float] = None,
                          allow_oversubscribe: bool = False) -> "MultiInstanceModel":
        """Serve ``model`` (an nn.Module or any Nano model) from ``num_processes`` worker
        processes, each pinned to its own physical cores with matching thread settings.

        The result is called with a list of inputs or a DataLoader and returns the outputs
        in input order; close it (or use ``with``) when done. ``timeout`` (seconds per
        input): a slower input is an error naming it, and the model is closed.
        ``allow_oversubscribe`` lets more processes than cores share them.
        """
        from nano.multiprocess.pool import MultiInstanceModel

        return MultiInstanceModel(model, num_processes, cores_per_process, cpu_for_each_process,
                                  timeout, allow_oversubscribe)

    @staticmethod
    def get_context(model: Any = None, *more: Any) -> contextlib.AbstractContextManager:
        """A no-op context kept for BigDL-Nano compatibility: Nano models apply their own
        threads and autocast inside each call."""
        return contextlib.nullcontext()

    # the search ------------------------------------------------------------------

    def optimize(self, model: torch.nn.Module, training_data: Any, validation_data: Any = None,
                 metric: Optional[Callable] = None, direction: str = "max",
                 thread_num: Optional[int] = None, accelerator: Any = None, precision: Any = None,
                 includes: Optional[Sequence[str]] = None,
                 excludes: Optional[Sequence[str]] = None, latency_sample_num: int = 100,
                 timeout_per_method: float = 300, dynamic_axes: Union[bool, dict] = True,
                 latency_budget: float = 10.0, memory_limit: Optional[int] = None,
                 early_stop_factor: Optional[float] = 3.0, final_round: bool = True,
                 input_sample: Any = None, search_mode: str = "default",
                 use_ipex: Optional[bool] = None, output_filename: Optional[str] = None,
                 time_budget: Optional[float] = None, latency_target: Optional[float] = None,
                 no_cache: bool = False, cache_dir: Optional[str] = None,
                 accuracy: Optional[str] = None, **bigdl_options: Any) -> None:
        """Try every applicable method on ``model`` and record speed and accuracy.

        ``training_data`` (a DataLoader, a tensor or a tuple of tensors) gives the
        input sample (its first batch) and calibrates the INT8 methods (up to
        16 batches). With ``metric`` and ``validation_data``
        each candidate's accuracy is measured (``metric(pred, target)`` or
        ``metric(model, data)`` when its first parameter is named ``model``).
        Without a metric, outputs on held-out batches (``validation_data``, else
        training batches calibration did not use) are judged against the
        original's by what they are (``nano.inference.judgement``): classifier
        and token logits by top-1 agreement, embeddings by their smallest cosine
        similarity, other outputs by relative L2 error; ``accuracy`` ("top1",
        "cosine" or "rel_l2") names one judgement for every output instead. A
        runtime's default INT8 that fails the default judgement (or the metric's
        criterion) is followed by other INT8 configurations, each a row
        (``nano.inference.int8_ladder``). ``accelerator``/``precision`` (a name
        or a tuple of names) and ``includes``/``excludes`` (method names) narrow
        the search. Each
        candidate runs in its own process with a hard ``timeout_per_method``.
        Timing takes up to ``latency_sample_num`` calls or ``latency_budget``
        seconds after warm-up; a candidate whose first 5 calls are over
        ``early_stop_factor`` times the best median so far (of the rows passing
        the default accuracy judgement) stops early (None measures everything).
        With ``final_round`` the fastest passing candidates of each precision (up
        to 4, within 1.5x of the best) are then timed again side by side in one
        process, and the picks order them by that timing.

        ``time_budget`` (seconds): no candidate starts once it is spent, a running one
        is stopped when it runs out (each still gets at least 30 s), and the rows not
        tried say so; the original is always tried. ``latency_target`` (seconds per
        call): the search stops at the first candidate, in search order, that meets
        it and passes the default accuracy judgement (the original included: a model
        already fast enough is kept as it is).

        Built ONNX Runtime, OpenVINO, TorchScript and PT2E INT8 candidates are kept in
        an on-disk cache (``cache_dir``, else ``$NANO_CACHE_DIR``, else
        ``~/.cache/nano``), keyed by the weights, code, sample structure, calibration
        data, method and library versions, so a second optimize() of the same model
        skips their conversions; ``no_cache=True`` (or ``NANO_CACHE_DIR=off``) turns
        it off. Latency and accuracy are always measured again.

        BigDL-Nano's forms: ``input_sample`` (the call to time and trace with,
        instead of training_data's first batch), ``use_ipex`` (True: only IPEX
        methods, False: none), ``search_mode`` ("default": likely winners first,
        leaving out the methods the rows so far show cannot win, each such row
        saying why, see ``nano.inference.search_plan``; "all": every method;
        "grid": every method matching the accelerator/precision/use_ipex given,
        which it requires; a method named in ``includes`` is always tried),
        ``output_filename`` (the summary is also written there).
        """
        compat.check_options("optimize", bigdl_options)
        check_judgement_name(accuracy)
        if accuracy is not None and metric is not None:
            raise NanoValueError("pass metric or accuracy, not both: accuracy names the "
                                 "judgement used without a metric")
        if search_mode not in ("default", "all", "grid"):
            raise NanoValueError(f"search_mode must be 'default', 'all' or 'grid', got "
                                 f"{search_mode!r}")
        if search_mode == "grid" and accelerator is None and precision is None \
                and use_ipex is None:
            raise NanoValueError("search_mode='grid' searches the methods matching accelerator=, "
                                 "precision= or use_ipex=; give at least one")
        if direction not in ("max", "min"):
            raise NanoValueError(f"direction must be 'max' or 'min', got {direction!r}")
        if metric is not None and not callable(metric):
            raise NanoTypeError("metric must be callable: metric(pred, target) or "
                                "metric(model, data)")
        if metric is not None and validation_data is None and metric_style(metric) == "pred":
            raise NanoValueError("a metric(pred, target) needs validation_data to be evaluated "
                                 "on")
        if output_filename is not None:
            report.check_output_file(output_filename, None, "output_filename")
        if latency_sample_num < 1 or timeout_per_method <= 0:
            raise NanoValueError("latency_sample_num must be >= 1 and timeout_per_method > 0")
        check_thread_num(thread_num)
        for name, value in (("time_budget", time_budget), ("latency_target", latency_target)):
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise NanoValueError(f"{name} must be a number of seconds above 0, got "
                                     f"{value!r}")
        methods = select_methods(includes, excludes,
                                 False if accelerator is None else accelerator, precision)
        if use_ipex is not None:
            methods = [m for m in methods if m.use_ipex == bool(use_ipex) or m.name == "original"]
        plan = SearchPlan(model, search_mode, includes)
        methods = plan.order(methods)
        from nano.launcher.topology import read_topology

        threads = thread_num or read_topology().thread_budget
        params = ForwardParams.of(model)
        given = None if input_sample is None else sample_call(model, input_sample)
        if given is not None:
            params = params.called_as(given)
        # the first batches calibrate INT8 (as many as quantize() uses; up to
        # MORE_CALIBRATION_BATCHES for the INT8 ladder's more_calib step, which only an
        # "all"/"grid" search climbs: a default one reads no more than it uses); without
        # validation_data, outputs are judged on the batches after them
        read = MORE_CALIBRATION_BATCHES if plan.exhaustive else CALIBRATION_BATCHES
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
        judgement = OutputJudgement.decide(model, references[0], accuracy)
        baseline_accuracy = None
        if metric is not None:
            baseline_accuracy = evaluate_metric(private_eval_copy(model), metric, eval_samples,
                                                targets, validation_data)
        self._reset(model, sample, threads, dynamic_axes, metric, direction)
        self._plan = plan
        self._calib, self._more_calib = calib, more_calib
        self._judgement = judgement
        self._judged_on_calibration = validation_data is None and len(train) == 1
        self._judged_rows = sum(batch_rows(s) for s in eval_samples)
        cache = _build_cache(cache_dir, no_cache, model, sample, dynamic_axes, pool)
        data = SearchData(model, sample, eval_samples, targets, references, metric,
                          validation_data, calib, judgement, more_calib=more_calib)
        if metric is not None and direction == "max" and metric_style(metric) == "pred":
            default = Criterion.parse(None)  # what _passes_default holds the ladder to
            data.metric_drop = (default.value, default.kind)
        self._held_out = data.held_out()
        started = time.monotonic()
        memory = memory_limit or default_memory_limit()
        from tqdm.auto import tqdm

        # the cleanup is inside signals_unwind: a SIGTERM is re-delivered (and ends the
        # process) when that block exits, so nothing after it would run
        with signals_unwind(), self._discarded_on_error(), \
                Zygote(data, janitor_dirs=[self._workdir.name]) as zygote, \
                tqdm(total=len(methods), desc="optimize", unit="method", disable=None,
                     file=sys.stderr) as bar:
            stop = None  # why the rest of the list is not tried
            todo = list(methods)
            while todo:
                method = todo.pop(0)
                skipped = (stop or int8_ladder.stop_reason(method, self.results,
                                                            plan.exhaustive,
                                                            self._passes_default)
                           or plan.skip_reason(method, self.results, self._passes_default))
                if skipped:
                    self.results.append(CandidateResult(method, "skipped", skipped))
                    bar.update(1)
                    continue
                spent = time.monotonic() - started
                bar.set_postfix_str(f"{method.name}, {spent:.0f} s" + (
                    f" of {time_budget:g} s" if time_budget else ""))
                best = self._best_median()
                task = CandidateTask(method, threads, dynamic_axes, latency_sample_num,
                                     latency_budget, best if early_stop_factor else None,
                                     early_stop_factor or 0.0,
                                     candidate_dir(self._workdir.name, method),
                                     os.path.join(self._workdir.name, "conversions"),
                                     cache(method))
                timeout = (timeout_per_method if method.name == "original" else
                           _within_budget(timeout_per_method, time_budget, started))
                row = run_candidate(zygote, task, timeout, memory)
                if method.name == "original" and row.status == "ok" and metric is not None:
                    row.accuracy = baseline_accuracy
                self.results.append(row)
                bar.update(1)
                stop = self._stop_reason(row, started, time_budget, latency_target)
                if int8_ladder.is_default_int8(method) and row.usable \
                        and not self._passes_default(row) \
                        and (plan.exhaustive or self._miss(row) <= int8_ladder.NEAR_MISS):
                    ladder = int8_ladder.steps(method, plan.exhaustive,
                                               more_data=bool(more_calib))
                    todo[:0] = ladder
                    bar.total += len(ladder)
                    bar.refresh()
            rows = (finalists(self.results, self._passes_default) if final_round and not stop
                    else [])
            if rows:
                bar.set_postfix_str(f"final round: {len(rows)} methods side by side")
                problem = run_final_round(
                    zygote, rows, threads, dynamic_axes,
                    _within_budget(timeout_per_method, time_budget, started), memory)
                if problem:
                    warnings.warn(f"optimize(): the final side-by-side timing did not finish "
                                  f"({problem}); picks use each method's own timing")
        self._total_seconds = time.monotonic() - started
        original = self._result("original")
        if original is None or not original.usable:
            why = f"{original.status}: {original.detail}" if original else "not tried"
            raise SearchFailed(f"the original model could not be run in the search ({why})")
        if output_filename is not None:
            with open(output_filename, "w") as f:
                self.summary(file=f)

    @contextlib.contextmanager
    def _discarded_on_error(self) -> Iterator[None]:
        """Interrupted or failed: nothing of this search is kept, in memory or on disk."""
        try:
            yield
        except BaseException:
            self.results = []
            self._workdir.cleanup()
            raise

    @property
    def optimized_model_dict(self) -> Mapping:
        """BigDL-Nano's view of the results, read-only: ``{method: {"status", "latency"
        (ms), "accuracy", "output_error", "model"}}``; "model" is built (or loaded) the
        first time it is read."""
        self._require_search()
        return MappingProxyType({r.name: ResultView(self, r) for r in self.results})

    @property
    def thread_num(self) -> Optional[int]:
        """The thread budget the last optimize() gave every candidate."""
        return self._thread_num

    def _reset(self, model, sample, threads, dynamic_axes, metric, direction):
        self.results = []
        self._built = {}
        self._model, self._sample, self._thread_num = model, sample, threads
        self._dynamic_axes, self._metric, self._direction = dynamic_axes, metric, direction
        self._workdir = tempfile.TemporaryDirectory(prefix="nano-optimize-")

    def _result(self, name: str) -> Optional[CandidateResult]:
        return next((r for r in self.results if r.name == name), None)

    def _stop_reason(self, row: CandidateResult, started: float, time_budget: Optional[float],
                     latency_target: Optional[float]) -> Optional[str]:
        """Why the search stops after ``row`` (a row for each method it leaves out), or None."""
        original = self._result("original")
        if latency_target is not None and row.usable and row.latency is not None \
                and original is not None and original.usable \
                and row.latency.median <= latency_target and self._passes(row, None):
            return (f"not tried: {row.name} met latency_target={latency_target:g} s "
                    f"({row.latency.median * 1e3:.3f} ms)")
        if time_budget is not None and time.monotonic() - started >= time_budget:
            return f"not tried: time_budget={time_budget:g} s spent"
        return None

    def _original(self) -> CandidateResult:
        """The baseline row (optimize() raises SearchFailed unless it ran and was timed)."""
        original = self._result("original")
        assert original is not None and original.latency is not None
        return original

    def _best_median(self) -> Optional[float]:
        """The best median so far among the rows that pass the default judgement (a fast
        but wrong model must not stop the others early)."""
        times = [r.latency.median for r in self.results
                 if r.usable and r.latency is not None and self._passes_default(r)]
        return min(times) if times else None

    def _require_search(self):
        if not self.results:
            raise RuntimeError("call optimize() first")

    def records(self) -> list[dict]:
        """The results as flat dicts (what summary prints and save_summary writes)."""
        self._require_search()
        return report.result_records(self.results, self._result("original"))

    def summary(self, file: Optional[IO[str]] = None) -> str:
        """Print (and return) the results table and the total cost of the search."""
        final = any("side_by_side" in r.extra for r in self.results)
        tried = sum(r.status not in ("skipped", "unavailable") for r in self.results)
        skipped = sum(r.status == "skipped" for r in self.results)
        text = (report.format_table(self.records()) +
                f"\n\n{tried} method{'' if tried == 1 else 's'} tried" +
                (f" ({skipped} left out, each row says why)" if skipped else "") +
                f" in {self._total_seconds:.1f} s "
                f"with {self._thread_num} threads; speed-up is against 'original'"
                + (", timed side by side with it for the final round's rows." if final
                   else ".") +
                "\npeak MB: the candidate's process at its peak (the shared model included); "
                "size MB: what save() writes" + ("; cold start s: load() and the first call, "
                                                 "for the final round's rows." if final
                                                 else ".") + self._judged_note())
        print(text, file=file or sys.stdout)
        return text

    def _judged_note(self) -> str:
        """Which judgement the output column used, and on what data."""
        if self._metric is not None or self._judgement is None:
            return ""
        note = (f"\noutputs judged without a metric: {self._judgement.describe()}, on "
                f"{self._judged_rows} held-out sample{'' if self._judged_rows == 1 else 's'}")
        if self._judged_rows < MIN_HELD_OUT_SAMPLES and not self._judged_on_calibration:
            note += (f" (fewer than {MIN_HELD_OUT_SAMPLES}: a weak promise; give more data or "
                     f"validation_data)")
        if self._judged_on_calibration:
            note += (" -- on the only training batch, which also calibrated INT8: pass "
                     "validation_data (or more batches) for a held-out judgement")
        return note + "."

    def save_summary(self, path: str) -> None:
        """Save the table as .txt, .csv, .json, or a .png/.svg/.pdf bar chart (by extension;
        any other extension is refused)."""
        report.save_records(self.records(), path)

    def _passes_default(self, r: CandidateResult) -> bool:
        """``r`` passes the default accuracy judgement (False while the original has not
        been timed: there is nothing to judge against)."""
        original = self._result("original")
        return original is not None and original.usable and self._passes(r, None)

    def _miss(self, r: CandidateResult) -> float:
        """How many times the default criterion's allowance ``r`` is off (over 1: fails)."""
        if self._metric is not None:
            criterion = Criterion.parse(None, self._direction == "max")
            base = self._original().accuracy
            if base is None or r.accuracy is None:
                return float("inf")
            return criterion.drop(base, r.accuracy) / max(criterion.value, 1e-12)
        return r.verdict.miss(r.method.precision) if r.verdict else 0.0

    def _passes(self, r: CandidateResult, accuracy_criterion) -> bool:
        if r.name == "original":
            return True
        if self._metric is not None:
            criterion = Criterion.parse(accuracy_criterion, self._direction == "max")
            base = self._original().accuracy
            return base is not None and r.accuracy is not None and criterion.passes(base,
                                                                                   r.accuracy)
        limit = (None if accuracy_criterion is None
                 else output_error_limit(accuracy_criterion, 0.0))
        return r.verdict is None or r.verdict.passes(r.method.precision, limit)

    def get_best_model(self, accelerator: Any = None, precision: Any = None,
                       accuracy_criterion: Any = None) -> tuple[AcceleratedModel, str]:
        """``(model, description)`` of the fastest candidate that passed the filters.

        ``accelerator``/``precision``: a name or tuple of names ("pytorch" is
        plain PyTorch; None means any). ``accuracy_criterion``: with a metric,
        the largest accuracy drop against the original, as in quantize(): a
        relative drop (0.01 = 1%, the default) or {"absolute": x}; without one,
        the largest error of each output's judgement (1 - top-1 agreement,
        1 - smallest cosine, or the relative L2 error), for every precision
        (default: per judgement and precision, ``nano.inference.judgement.TOLERANCE``).
        """
        self._require_search()
        if self._metric is not None:
            Criterion.parse(accuracy_criterion)  # a mistake is an error even if nothing ran
        else:
            output_error_limit(accuracy_criterion, 0.0)
        accs = None if accelerator is None else {
            normalize_accelerator(a) for a in (accelerator if isinstance(accelerator, (list, tuple))
                                               else [accelerator])}
        precs = None if precision is None else {
            normalize_precision(p) for p in (precision if isinstance(precision, (list, tuple))
                                             else [precision])}
        candidates = [r for r in self.results if r.usable
                      and (accs is None or r.method.accelerator in accs)
                      and (precs is None or r.method.precision in precs)
                      and self._passes(r, accuracy_criterion)]
        if not candidates:
            raise RuntimeError(
                f"no method matches accelerator={accelerator!r}, precision={precision!r}, "
                f"accuracy_criterion={accuracy_criterion!r}; see summary() for what ran")
        best = ranked(candidates)[0]
        assert best.latency is not None  # usable rows are timed
        if precs is not None and self._plan is not None and not self._plan.exhaustive:
            # rows this precision lost to faster ones of another precision (the plan's
            # "best so far" and the early stop look at every precision)
            left = [r.name for r in self.results if r.method.precision in precs
                    and (r.status == "slow" or r.name in self._plan.outpaced)]
            others = any(r.usable and r.method.precision not in precs for r in self.results
                         if r.name != "original")
            if left and others:
                warnings.warn(
                    f"get_best_model(precision={precision!r}): the default search left out or "
                    f"stopped {len(left)} such method(s) ({', '.join(left[:4])}"
                    f"{', ...' if len(left) > 4 else ''}) because faster ones of other "
                    f"precisions ran; for the best of this precision, optimize(..., "
                    f"precision={precision!r}) or search_mode='all'", stacklevel=2)
        description = (f"{best.name}: {best.latency.median * 1e3:.3f} ms median, "
                       f"{speedup(best, self._original()) or 1.0:.2f}x the original")
        if "side_by_side" in best.extra:
            description += (f" (fastest of the final round, timed side by side with the "
                            f"original: {best.extra['side_by_side'] * 1e3:.3f} ms)")
        return self.get_model(best.name), description

    def measure_throughput(self, top: int = 3, instances: Optional[int] = None,
                           calls: int = 64, accuracy_criterion: Optional[float] = None
                           ) -> list[tuple[str, float, float]]:
        """For the ``top`` fastest candidates within ``accuracy_criterion`` (as in
        get_best_model): calls/s of one instance using every core vs ``instances``
        (default: one per physical core) pinned single-core instances.

        The figures join the summary table; returns (method, single, multi) rows.
        """
        from nano.multiprocess.throughput import measure_throughput

        self._require_search()
        n = instances or self._thread_num
        fastest = ranked([r for r in self.results
                          if r.usable and self._passes(r, accuracy_criterion)])[:top]
        rows = []
        for r in fastest:
            t = measure_throughput(self.get_model(r.name), self._sample, n, calls,
                                   self._thread_num)
            r.extra.update(throughput_single=t.single, throughput_multi=t.multi, instances=n)
            rows.append((r.name, t.single, t.multi))
        return rows

    def get_model(self, method_name: str) -> AcceleratedModel:
        """The model built by ``method_name`` during optimize() (loaded or rebuilt here)."""
        self._require_search()
        row = self._result(method_name)
        if row is None:
            get_method(method_name)  # a typo: the error lists the valid names
        if row is None or not row.usable:
            raise RuntimeError(f"{method_name} has no usable model: "
                               f"{row.status + ': ' + row.detail if row else 'not tried'}")
        if method_name not in self._built:
            self._built[method_name] = build_candidate(
                row.method, self._model, self._sample, self._thread_num, self._dynamic_axes,
                self._calib, row.saved_to, held_out=self._held_out,
                more_calib=self._more_calib)
        return self._built[method_name]
