"""``InferenceOptimizer``: trace, save/load, and optimize() that picks the fastest runtime."""

from __future__ import annotations

import contextlib
import sys
import warnings
from types import MappingProxyType
from typing import Any, Callable, IO, Mapping, Optional, Sequence, TYPE_CHECKING, Union

import torch

from nano.errors import NanoTypeError, NanoValueError
from nano.runtimes import bigdl_forms, registry
from nano.runtimes.data import is_spark_dataframe
from nano.runtimes.loading import load_model, save_model
from nano.runtimes.methods import Method, normalize_precision
from nano.runtimes.model import AcceleratedModel, torch_threads
from nano.runtimes.prepare import prepare
from nano.runtimes.registry import get_method, normalize_accelerator
from nano.search import report
from nano.search.candidates import CandidateResult, ranked, speedup
from nano.search.criterion import Criterion, output_error_limit
from nano.search.inputs import read_inputs
from nano.search.search_options import SearchOptions
from nano.search.run import Search

if TYPE_CHECKING:
    from nano.generation.lm_models import GeneratingModel
    from nano.generation.lm_search import GenerationSearch
    from nano.multiprocess.pool import MultiInstanceModel


def build_method(model: torch.nn.Module, method: Method, input_sample: Any,
                 thread_num: Optional[int] = None,
                 dynamic_axes: Union[bool, dict] = True) -> AcceleratedModel:
    """Build one method in this process (no isolation)."""
    return registry.build(method, prepare(model, input_sample, thread_num, dynamic_axes))




def _check_layout_options(acc: str, use_ipex: bool, channels_last: bool) -> None:
    """use_ipex and channels_last only where a backend builds them (read from the specs)."""
    fp = [s for s in registry.specs() if s.quantizer is None]
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


def _spark_sample(data: Any) -> Any:
    """A Spark DataFrame's first rows as a DataLoader; anything else unchanged (PySpark is
    only imported for a DataFrame)."""
    if is_spark_dataframe(data):
        from nano.spark.frames import sample
        return sample(data)
    return data


def bigdl_status(row: CandidateResult) -> str:
    """A row's status in BigDL-Nano's words ("successful", "early stopped", "fail to
    convert", "fail to forward", "lack dependency"), for code that reads them; the summary
    table keeps Nano's own, which say more (drift, crashed, timeout, memory, skipped)."""
    if row.usable:  # ok, or drift: it ran, and its accuracy columns say how far off it is
        return "successful"
    if row.status in ("slow", "skipped"):
        return "early stopped"
    if row.status == "unavailable":
        return "lack dependency"
    if row.status == "failed" and row.detail.startswith("failed to convert"):
        return "fail to convert"
    return "fail to forward"


class ResultView(Mapping):
    """One row of ``optimized_model_dict``: read-only, its model built on first access.
    ``status`` speaks BigDL-Nano's words (``bigdl_status``); ``nano_status`` is the table's."""

    def __init__(self, optimizer: "InferenceOptimizer", row: CandidateResult):
        self._optimizer, self._row = optimizer, row
        latency = row.latency.median * 1e3 if row.latency else None
        self._data = {"status": bigdl_status(row), "nano_status": row.status,
                      "latency": latency, "accuracy": row.accuracy,
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
        self._search: Optional[Search] = None
        self._built: dict = {}

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
        bigdl_forms.check_options("trace", bigdl_options)
        bigdl_forms.check_device(device)
        input_sample, accelerator = bigdl_forms.sample_and_accelerator(input_sample, accelerator)
        model = _original_of(model, "trace")
        acc = normalize_accelerator(accelerator)
        _check_layout_options(acc, use_ipex, channels_last)
        method = Method(acc, "fp32", channels_last, use_ipex).with_options(
            **bigdl_forms.runtime_options(acc, jit_method, jit_strict, openvino_config,
                                     onnxruntime_session_options))
        sample = bigdl_forms.with_kwarg_inputs(input_sample, example_kwarg_inputs)
        if sample is None:
            built = registry.build_without_sample(method, model, thread_num)
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

        bigdl_forms.check_options("quantize", bigdl_options)
        bigdl_forms.check_device(device)
        if not isinstance(use_ipex, bool):
            raise NanoTypeError(f"use_ipex must be True or False, got a {type(use_ipex).__name__}"
                                f"; quantize() takes BigDL-Nano's order (model, precision, "
                                f"accelerator, use_ipex, calib_data, ...): pass calib_data= "
                                f"by keyword")
        bigdl_forms.check_tuning_strategy(tuning_strategy)
        if calib_dataloader is not None:
            if calib_data is not None:
                raise NanoValueError("pass calib_data or calib_dataloader, not both")
            calib_data = calib_dataloader
        if eval_func is not None:
            if metric is not None:
                raise NanoValueError("pass metric or eval_func, not both")
            metric = bigdl_forms.eval_func_metric(eval_func)
        model = _original_of(model, "quantize")
        built = quantize(
            model, precision=precision, accelerator=accelerator, calib_data=calib_data,
            metric=metric, accuracy_criterion=accuracy_criterion, approach=approach,
            method=method, max_trials=max_trials, timeout=timeout, thread_num=thread_num,
            input_sample=bigdl_forms.with_kwarg_inputs(input_sample, example_kwarg_inputs),
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
        from nano.generation.lm_models import GeneratingModel

        if isinstance(model, GeneratingModel):
            if compression is not None:
                raise NanoValueError("compression applies to inference models; a generating "
                                     "model keeps the weights its method chose")
            model.save(path)
            return
        save_model(model, path, compression)

    @staticmethod
    def load(path: str, model: Optional[torch.nn.Module] = None, input_sample: Any = None,
             device: str = "CPU") -> Union[AcceleratedModel, "GeneratingModel"]:
        """Load a directory written by ``save``. ``model`` (the original module) is needed
        only for kinds saved as state dicts (plain PyTorch, compile, IPEX); the error says
        so. Given, its attributes are reachable on the loaded model. ``input_sample`` is
        accepted for BigDL-Nano code: saved models need none. A generating model (saved
        from ``optimize_generation``) loads as one."""
        from nano.generation.lm_models import is_generation_dir, load_lm

        bigdl_forms.check_device(device)
        if is_generation_dir(path):  # written by optimize_generation's pick or build_lm
            return load_lm(path)
        return load_model(path, model)

    @staticmethod
    def optimize_generation(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str],
                            held_out_text: str, methods: Optional[Sequence[str]] = None,
                            **choices: Any) -> "GenerationSearch":
        """Build, judge and time every text-generation candidate of a causal LM; the result's
        ``best()`` is the fastest whose greedy tokens and perplexity stay within bounds, and
        ``summary()`` the table. See ``nano.generation``."""
        from nano.generation.lm_search import optimize_generation

        return optimize_generation(model, tokenizer, prompts, held_out_text, methods, **choices)

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
        """BigDL-Nano's context for calling accelerated models: inside it, torch uses the
        models' ``thread_num`` (the largest one given; the count is put back on exit).
        Nano models already apply their own threads and autocast inside each call, so
        this matters only to code that reads ``torch.get_num_threads()`` or runs plain
        PyTorch beside them."""
        counts = [m.thread_num for m in (model, *more)
                  if isinstance(m, AcceleratedModel) and m.thread_num]
        return torch_threads(max(counts) if counts else None)

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
        16 batches). A Spark DataFrame is read as its first rows on the driver, each
        column an input in order (a last extra column the target);
        ``nano.spark.sample(df, columns, input_shapes, label)`` chooses and reshapes
        them. With ``metric`` and ``validation_data`` each candidate's accuracy is
        measured (``metric(pred, target)`` or ``metric(model, data)`` when its first
        parameter is named ``model``).
        Without a metric, outputs on held-out batches (``validation_data``, else
        training batches calibration did not use) are judged against the
        original's by what they are (``nano.search.judgement``): classifier
        and token logits by top-1 agreement, embeddings by their smallest cosine
        similarity, other outputs by relative L2 error; ``accuracy`` ("top1",
        "cosine" or "rel_l2") names one judgement for every output instead. A
        runtime's default INT8 that fails the default judgement (or the metric's
        criterion) is followed by other INT8 configurations, each a row
        (``nano.search.int8_ladder``). ``accelerator``/``precision`` (a name
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
        saying why, see ``nano.search.plan``; "all": every method;
        "grid": every method matching the accelerator/precision/use_ipex given,
        which it requires; a method named in ``includes`` is always tried),
        ``output_filename`` (the summary is also written there).
        """
        options = SearchOptions.from_call(
            bigdl_options, metric=metric, direction=direction,
            has_validation_data=validation_data is not None, thread_num=thread_num,
            accelerator=accelerator, precision=precision, includes=includes, excludes=excludes,
            latency_sample_num=latency_sample_num, timeout_per_method=timeout_per_method,
            dynamic_axes=dynamic_axes, latency_budget=latency_budget, memory_limit=memory_limit,
            early_stop_factor=early_stop_factor, final_round=final_round,
            search_mode=search_mode, use_ipex=use_ipex, output_filename=output_filename,
            time_budget=time_budget, latency_target=latency_target, no_cache=no_cache,
            cache_dir=cache_dir, accuracy=accuracy)
        training_data = _spark_sample(training_data)
        validation_data = _spark_sample(validation_data)
        inputs = read_inputs(model, training_data, validation_data, input_sample, options)
        self._built = {}
        # run() empties the rows if interrupted; if only the original failed, they stay
        # for summary() to show
        self._search = Search(model, inputs, options)
        self._search.run()
        if output_filename is not None:
            with open(output_filename, "w") as f:
                self.summary(file=f)

    @property
    def results(self) -> list[CandidateResult]:
        """The rows of the last optimize(), one per method (empty before one finished)."""
        return self._search.results if self._search is not None else []

    @property
    def optimized_model_dict(self) -> Mapping:
        """BigDL-Nano's view of the results, read-only: ``{method: {"status", "latency"
        (ms), "accuracy", "output_error", "model"}}``; "model" is built (or loaded) the
        first time it is read."""
        search = self._require_search()
        return MappingProxyType({r.name: ResultView(self, r) for r in search.results})

    @property
    def thread_num(self) -> Optional[int]:
        """The thread budget the last optimize() gave every candidate."""
        return self._search.thread_num if self._search is not None else None

    def _require_search(self) -> Search:
        if self._search is None or not self._search.results:  # none, or one interrupted
            raise RuntimeError("call optimize() first")
        return self._search

    def records(self) -> list[dict]:
        """The results as flat dicts (what summary prints and save_summary writes)."""
        return self._require_search().records()

    def summary(self, file: Optional[IO[str]] = None) -> str:
        """Print (and return) the results table and the total cost of the search."""
        text = self._require_search().summary()
        print(text, file=file or sys.stdout)
        return text

    def save_summary(self, path: str) -> None:
        """Save the table as .txt, .csv, .json, or a .png/.svg/.pdf bar chart (by extension;
        any other extension is refused)."""
        report.save_records(self.records(), path)

    def get_best_model(self, accelerator: Any = None, precision: Any = None,
                       accuracy_criterion: Any = None) -> tuple[AcceleratedModel, str]:
        """``(model, description)`` of the fastest candidate that passed the filters.

        ``accelerator``/``precision``: a name or tuple of names ("pytorch" is
        plain PyTorch; None means any). ``accuracy_criterion``: with a metric,
        the largest accuracy drop against the original, as in quantize(): a
        relative drop (0.01 = 1%, the default) or {"absolute": x}; without one,
        the largest error of each output's judgement (1 - top-1 agreement,
        1 - smallest cosine, or the relative L2 error), for every precision
        (default: per judgement and precision, ``nano.search.judgement.TOLERANCE``).
        """
        search = self._require_search()
        if search.options.metric is not None:
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
                      and search.passes(r, accuracy_criterion)]
        if not candidates:
            raise RuntimeError(
                f"no method matches accelerator={accelerator!r}, precision={precision!r}, "
                f"accuracy_criterion={accuracy_criterion!r}; see summary() for what ran")
        best = ranked(candidates)[0]
        assert best.latency is not None  # usable rows are timed
        if precs is not None and not search.plan.exhaustive:
            # rows this precision lost to faster ones of another precision (the plan's
            # "best so far" and the early stop look at every precision)
            left = [r.name for r in self.results if r.method.precision in precs
                    and (r.status == "slow" or r.name in search.plan.outpaced)]
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
                       f"{speedup(best, search.original()) or 1.0:.2f}x the original")
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

        search = self._require_search()
        n = instances or search.thread_num
        fastest = ranked([r for r in self.results
                          if r.usable and search.passes(r, accuracy_criterion)])[:top]
        rows = []
        for r in fastest:
            t = measure_throughput(self.get_model(r.name), search.inputs.data.sample, n, calls,
                                   search.thread_num)
            r.extra.update(throughput_single=t.single, throughput_multi=t.multi, instances=n)
            rows.append((r.name, t.single, t.multi))
        return rows

    def get_model(self, method_name: str) -> AcceleratedModel:
        """The model built by ``method_name`` during optimize() (loaded or rebuilt here)."""
        search = self._require_search()
        row = search.result(method_name)
        if row is None:
            get_method(method_name)  # a typo: the error lists the valid names
        if row is None or not row.usable:
            raise RuntimeError(f"{method_name} has no usable model: "
                               f"{row.status + ': ' + row.detail if row else 'not tried'}")
        if method_name not in self._built:
            self._built[method_name] = search.model_of(row)
        return self._built[method_name]
