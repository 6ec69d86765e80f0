"""One optimize() run: candidates tried in the plan's order, each in its own process, then
the fastest timed again side by side; and the rows it leaves, judged.

``Search(model, inputs, options).run()`` fills ``results`` (one ``CandidateResult`` per
method, tried or left out with a reason). The INT8 ladder's steps join the list after a
default INT8 that missed; a ``time_budget`` or ``latency_target`` ends the list early.
Interrupted or failed, a search keeps nothing, in memory or on disk.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Iterator, Optional

import torch

from nano.errors import NanoValueError, SearchFailed
from nano.launcher.termination import signals_unwind
from nano.launcher.topology import read_topology
from nano.runtimes.calibration import MIN_HELD_OUT_SAMPLES
from nano.runtimes.methods import Method
from nano.runtimes.model import AcceleratedModel
from nano.runtimes.registry import preload_modules
from nano.search import int8_ladder, report
from nano.search.candidates import (CandidateResult, CandidateTask, build_candidate,
                                    candidate_dir, default_memory_limit, finalists,
                                    run_candidate, run_final_round)
from nano.search.criterion import Criterion, output_error_limit
from nano.search.inputs import SearchInputs
from nano.search.isolation import Zygote
from nano.search.search_options import SearchOptions
from nano.search.plan import SearchPlan

# With a time_budget, a candidate still gets this long even when less of the budget is left,
# so that the last one tried is not cut off before it could show anything.
MIN_CANDIDATE_SECONDS = 30.0


class Search:
    """The state of one optimize(): its inputs, options, plan and rows."""

    def __init__(self, model: torch.nn.Module, inputs: SearchInputs, options: SearchOptions):
        self.model, self.inputs, self.options = model, inputs, options
        self.plan = SearchPlan(model, options.search_mode, options.includes)
        self.thread_num = options.thread_num or read_topology().thread_budget
        self.results: list[CandidateResult] = []
        self.total_seconds = 0.0
        self.workdir = tempfile.TemporaryDirectory(prefix="nano-optimize-")
        self.held_out = inputs.data.held_out()
        self._started = 0.0

    # running -------------------------------------------------------------------------

    def run(self) -> None:
        """Try every method (or leave it out saying why); raise SearchFailed when the
        original itself could not run."""
        from tqdm.auto import tqdm

        methods = self.plan.order(self.options.methods())
        memory = self.options.memory_limit or default_memory_limit()
        self._started = time.monotonic()
        # the cleanup is inside signals_unwind: a SIGTERM is re-delivered (and ends the
        # process) when that block exits, so nothing after it would run
        with signals_unwind(), self._discarded_on_error():
            cache = self._build_cache()  # an unwritable cache_dir leaves no work directory
            with Zygote(self.inputs.data, janitor_dirs=[self.workdir.name],
                        preload=preload_modules(methods)) as zygote, \
                    tqdm(total=len(methods), desc="optimize", unit="method", disable=None,
                         file=sys.stderr) as bar:
                stop = self._try_each(methods, zygote, cache, memory, bar)
                self._final_round(zygote, memory, bar, stopped=stop is not None)
        self.total_seconds = time.monotonic() - self._started
        original = self.result("original")
        if original is None or not original.usable:
            why = f"{original.status}: {original.detail}" if original else "not tried"
            raise SearchFailed(f"the original model could not be run in the search ({why})")

    def _try_each(self, methods: list[Method], zygote: Zygote,
                  cache: Callable[[Method], Optional[str]], memory: int, bar) -> Optional[str]:
        """Run or leave out each method in turn; return why the list ended early, if it did."""
        stop = None  # why the rest of the list is not tried
        todo = list(methods)
        while todo:
            method = todo.pop(0)
            skipped = (stop or int8_ladder.stop_reason(method, self.results, self.plan.exhaustive,
                                                       self.passes_default)
                       or self.plan.skip_reason(method, self.results, self.passes_default))
            if skipped:
                self.results.append(CandidateResult(method, "skipped", skipped))
                bar.update(1)
                continue
            budget = self.options.time_budget
            bar.set_postfix_str(f"{method.name}, {time.monotonic() - self._started:.0f} s"
                                + (f" of {budget:g} s" if budget else ""))
            row = run_candidate(zygote, self._task(method, cache(method)),
                                self._time_limit(method), memory)
            if method.name == "original" and row.status == "ok" \
                    and self.options.metric is not None:
                row.accuracy = self.inputs.baseline_accuracy
            self.results.append(row)
            bar.update(1)
            stop = self._stop_reason(row)
            ladder = self._ladder_after(row)
            todo[:0] = ladder
            if ladder:
                bar.total += len(ladder)
                bar.refresh()
        return stop

    def _task(self, method: Method, cache_entry: Optional[str]) -> CandidateTask:
        o = self.options
        best = self.best_median()
        return CandidateTask(method, self.thread_num, o.dynamic_axes, o.latency_sample_num,
                             o.latency_budget, best if o.early_stop_factor else None,
                             o.early_stop_factor or 0.0,
                             candidate_dir(self.workdir.name, method),
                             os.path.join(self.workdir.name, "conversions"), cache_entry)

    def _time_limit(self, method: Method) -> float:
        """A candidate's time limit (the original always gets ``timeout_per_method``)."""
        return self.options.timeout_per_method if method.name == "original" \
            else self._within_budget()

    def _within_budget(self) -> float:
        """``timeout_per_method``, cut to what is left of ``time_budget`` (but not below
        MIN_CANDIDATE_SECONDS)."""
        timeout, budget = self.options.timeout_per_method, self.options.time_budget
        if budget is None:
            return timeout
        left = budget - (time.monotonic() - self._started)
        return min(timeout, max(left, MIN_CANDIDATE_SECONDS))

    def _ladder_after(self, row: CandidateResult) -> list[Method]:
        """The INT8 ladder's steps to try next when ``row``, a runtime's default INT8, ran
        but missed the default judgement (near enough, or in an exhaustive search)."""
        if not (int8_ladder.is_default_int8(row.method) and row.usable
                and not self.passes_default(row)
                and (self.plan.exhaustive or self.miss(row) <= int8_ladder.NEAR_MISS)):
            return []
        return int8_ladder.steps(row.method, self.plan.exhaustive,
                                 more_data=bool(self.inputs.data.more_calib))

    def _final_round(self, zygote: Zygote, memory: int, bar, stopped: bool) -> None:
        """Time the fastest passing rows again side by side in one process."""
        rows = (finalists(self.results, self.passes_default)
                if self.options.final_round and not stopped else [])
        if not rows:
            return
        bar.set_postfix_str(f"final round: {len(rows)} methods side by side")
        problem = run_final_round(zygote, rows, self.thread_num, self.options.dynamic_axes,
                                  self._within_budget(), memory)
        if problem:
            warnings.warn(f"optimize(): the final side-by-side timing did not finish "
                          f"({problem}); picks use each method's own timing")

    @contextlib.contextmanager
    def _discarded_on_error(self) -> Iterator[None]:
        """Interrupted or failed: nothing of this search is kept, in memory or on disk."""
        try:
            yield
        except BaseException:
            self.results = []
            self.workdir.cleanup()
            raise

    def _build_cache(self) -> Callable[[Method], Optional[str]]:
        """method -> its build-cache entry for this search (None when caching is off)."""
        from nano.launcher.writable import unwritable_reason
        from nano.search import build_cache

        cache_dir = self.options.cache_dir
        root = build_cache.cache_root(cache_dir, self.options.no_cache)
        if root is not None:
            reason = unwritable_reason(root)
            if reason:
                if cache_dir:
                    raise NanoValueError(f"cache_dir {cache_dir!r} cannot be written: {reason}")
                warnings.warn(f"optimize(): no build cache ({root}: {reason}); pass cache_dir= "
                              f"or no_cache=True", stacklevel=4)
                root = None
        if root is None:
            return lambda method: None
        key = build_cache.model_key(self.model, self.inputs.data.sample,
                                    self.options.dynamic_axes, self.inputs.calibration_pool)
        build_cache.evict(root, build_cache.max_bytes(), keep=os.path.join(root, key))
        return lambda method: build_cache.entry_dir(root, key, method)

    def _stop_reason(self, row: CandidateResult) -> Optional[str]:
        """Why the search stops after ``row`` (a row for each method it leaves out), or None."""
        target, budget = self.options.latency_target, self.options.time_budget
        original = self.result("original")
        if target is not None and row.usable and row.latency is not None \
                and original is not None and original.usable \
                and row.latency.median <= target and self.passes(row, None):
            return (f"not tried: {row.name} met latency_target={target:g} s "
                    f"({row.latency.median * 1e3:.3f} ms)")
        if budget is not None and time.monotonic() - self._started >= budget:
            return f"not tried: time_budget={budget:g} s spent"
        return None

    # the rows ------------------------------------------------------------------------

    def result(self, name: str) -> Optional[CandidateResult]:
        """The row of method ``name``, or None if it has none."""
        return next((r for r in self.results if r.name == name), None)

    def original(self) -> CandidateResult:
        """The baseline row (run() raises SearchFailed unless it ran and was timed)."""
        original = self.result("original")
        assert original is not None and original.latency is not None
        return original

    def best_median(self) -> Optional[float]:
        """The best median so far among the rows that pass the default judgement (a fast
        but wrong model must not stop the others early)."""
        times = [r.latency.median for r in self.results
                 if r.usable and r.latency is not None and self.passes_default(r)]
        return min(times) if times else None

    def passes_default(self, r: CandidateResult) -> bool:
        """``r`` passes the default accuracy judgement (False while the original has not
        been timed: there is nothing to judge against)."""
        original = self.result("original")
        return original is not None and original.usable and self.passes(r, None)

    def miss(self, r: CandidateResult) -> float:
        """How many times the default criterion's allowance ``r`` is off (over 1: fails)."""
        if self.options.metric is not None:
            criterion = Criterion.parse(None, self.options.direction == "max")
            base = self.original().accuracy
            if base is None or r.accuracy is None:
                return float("inf")
            return criterion.drop(base, r.accuracy) / max(criterion.value, 1e-12)
        return r.verdict.miss(r.method.precision) if r.verdict else 0.0

    def passes(self, r: CandidateResult, accuracy_criterion: Any) -> bool:
        """``r`` is within ``accuracy_criterion`` (as get_best_model takes it) of the
        original; None: the default."""
        if r.name == "original":
            return True
        if self.options.metric is not None:
            criterion = Criterion.parse(accuracy_criterion, self.options.direction == "max")
            base = self.original().accuracy
            return base is not None and r.accuracy is not None and criterion.passes(base,
                                                                                   r.accuracy)
        limit = (None if accuracy_criterion is None
                 else output_error_limit(accuracy_criterion, 0.0))
        return r.verdict is None or r.verdict.passes(r.method.precision, limit)

    def model_of(self, row: CandidateResult) -> AcceleratedModel:
        """The model ``row`` measured, loaded from where its child saved it or rebuilt."""
        data = self.inputs.data
        return build_candidate(row.method, self.model, data.sample, self.thread_num,
                               self.options.dynamic_axes, data.calib, row.saved_to,
                               held_out=self.held_out, more_calib=data.more_calib)

    # the report ----------------------------------------------------------------------

    def records(self) -> list[dict]:
        """The results as flat dicts (what summary prints and save_summary writes)."""
        return report.result_records(self.results, self.result("original"))

    def summary(self) -> str:
        """The results table and the total cost of the search."""
        final = any("side_by_side" in r.extra for r in self.results)
        tried = sum(r.status not in ("skipped", "unavailable") for r in self.results)
        skipped = sum(r.status == "skipped" for r in self.results)
        return (report.format_table(self.records()) +
                f"\n\n{tried} method{'' if tried == 1 else 's'} tried" +
                (f" ({skipped} left out, each row says why)" if skipped else "") +
                f" in {self.total_seconds:.1f} s "
                f"with {self.thread_num} threads; speed-up is against 'original'"
                + (", timed side by side with it for the final round's rows." if final
                   else ".") +
                "\npeak MB: the candidate's process at its peak (the shared model included); "
                "size MB: what save() writes" + ("; cold start s: load() and the first call, "
                                                 "for the final round's rows." if final
                                                 else ".") + self._judged_note())

    def _judged_note(self) -> str:
        """Which judgement the output column used, and on what data."""
        judgement = self.inputs.data.judgement
        if self.options.metric is not None or judgement is None:
            return ""
        rows, on_calibration = self.inputs.judged_rows, self.inputs.judged_on_calibration
        note = (f"\noutputs judged without a metric: {judgement.describe()}, on "
                f"{rows} held-out sample{'' if rows == 1 else 's'}")
        if rows < MIN_HELD_OUT_SAMPLES and not on_calibration:
            note += (f" (fewer than {MIN_HELD_OUT_SAMPLES}: a weak promise; give more data or "
                     f"validation_data)")
        if on_calibration:
            note += (" -- on the only training batch, which also calibrated INT8: pass "
                     "validation_data (or more batches) for a held-out judgement")
        return note + "."
