"""``optimize_generation``: build each candidate in isolation, judge it, time it, pick one.

Each candidate is built and saved by one child process and loaded, judged and timed by
another (``nano.search.isolation``): a runtime that crashes costs its row, every number is
of the saved model as a user would load it, and the peak memory is that child's own.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import psutil
import torch

from nano.errors import NanoTypeError, NanoValueError, SearchFailed
from nano.generation import judging
from nano.generation.build import (DEFAULT_METHODS, METHODS, build_lm, lm_method,
                                   unavailable_reason)
from nano.generation.causal_lm import check_causal_lm, check_lengths
from nano.generation.judging import HeldOut
from nano.generation.lm_models import GeneratingModel, TorchLM, load_lm
from nano.generation.timing import Speed, bytes_per_step, measure, read_bandwidth
from nano.search import isolation
from nano.search.candidates import default_memory_limit
from nano.search.isolation import Zygote

logger = logging.getLogger(__name__)

ORIGINAL = "pytorch_fp32"
# Rows within this share of the fastest are timed again side by side, in one process, before
# the pick: each timed in its own window, the 1.1 B Llama's two INT4 rows came 4% apart in
# one run of benchmarks/generation.py and 26% in the next, a different one ahead each time.
FINAL_MARGIN = 0.25
FINAL_ROWS = 3
FINAL_ROUNDS = 3


@dataclass
class LMResult:
    """One candidate's row: how it ended and, if it ran, what it measured."""

    method: str
    status: str  # ok, rejected, skipped, failed, crashed, timeout, memory
    detail: str = ""
    agreement: Optional[float] = None
    perplexity: Optional[float] = None
    speeds: list = field(default_factory=list)  # Speed per batch size
    size_bytes: int = 0
    peak_memory_bytes: int = 0
    build_s: float = 0.0
    bytes_per_step: int = 0  # what a decode step reads at batch 1 (weights and cache)
    read_bytes_per_s: float = 0.0  # a read of bytes_per_step, right after the timing
    bandwidth: float = 0.0  # the limit's: the most shown at this working set or a larger one
    bandwidth_from: str = ""  # what showed it: a read, or a decode
    side_by_side: Optional[float] = None  # decode tokens/s in the final round, if it ran

    @property
    def passes(self) -> bool:
        return self.status == "ok"

    @property
    def limit_tokens_per_s(self) -> Optional[float]:
        """Decode tokens/s the bandwidth allows at batch 1 (None where not measured)."""
        return self.bandwidth / self.bytes_per_step if self.bandwidth and self.bytes_per_step \
            else None

    def speed(self, batch: int) -> Optional[Speed]:
        return next((s for s in self.speeds if s.batch == batch), None)

    def decode_tokens_per_s(self, batch: int) -> float:
        """Decode tokens/s at ``batch`` (0 when not measured)."""
        speed = self.speed(batch)
        return speed.decode_tokens_per_s if speed else 0.0


def _build(task: tuple) -> float:
    method, path, thread_num = task
    # a builder's temporary files (the ONNX Runtime export's) go under the search's own
    # directory, which is removed however this child ends (a killed child runs no cleanup)
    tempfile.tempdir = os.path.dirname(path)
    start = time.monotonic()
    build_lm(isolation.SHARED["model"], method, thread_num).save(path)
    return time.monotonic() - start


def _measure(task: tuple) -> dict:
    path, held_out, timing_prompt, batches, new_tokens = task
    before = psutil.Process().memory_info().rss
    model = load_lm(path)
    agreement = judging.agreement(model, held_out)
    perplexity = judging.perplexity(model, held_out.windows)
    speeds = [measure(model, timing_prompt[:1].expand(b, -1).contiguous(), new_tokens)
              for b in batches]
    # the step's bytes at the middle of the timed tokens
    step = bytes_per_step(model.config, model.streamed_weight_bytes(path), 1,
                          timing_prompt.shape[1] + new_tokens // 2, model.cache_bytes_per_value())
    result = {"agreement": agreement, "perplexity": perplexity, "speeds": speeds,
              "size_bytes": model.size_on_disk(path), "bytes_per_step": step}
    result["peak_memory_bytes"] = max(
        0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
    del model
    # as many bytes read in this process right after the timing (not in the peak)
    result["read_bytes_per_s"] = read_bandwidth(step)
    return result


def _side_by_side(task: tuple) -> list[float]:
    """Median decode tokens/s of each saved model, timed in turn round after round."""
    paths, prompt, new_tokens, rounds = task
    models = [load_lm(path) for path in paths]
    rates: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for model, got in zip(models, rates):
            got.append(measure(model, prompt, new_tokens, repeats=1).decode_tokens_per_s)
    return [statistics.median(r) for r in rates]


def fastest(rows: Sequence[LMResult], batch: int) -> LMResult:
    """The passing row of ``rows`` with the most decode tokens/s at ``batch``: by the final
    side-by-side round where it timed any of them, else by each row's own timing."""
    again = [r for r in rows if r.side_by_side]
    if again:
        return max(again, key=lambda r: r.side_by_side or 0.0)
    return max((r for r in rows if r.passes and r.speed(batch)),
               key=lambda r: r.decode_tokens_per_s(batch))


@dataclass(frozen=True)
class GenerationOptions:
    """The choices of one ``optimize_generation`` call, checked when made."""

    methods: tuple
    new_tokens: int = 32
    batches: tuple = (1, 4)
    prompt_tokens: int = 64
    min_agreement: float = judging.MIN_AGREEMENT
    max_perplexity_increase: float = judging.MAX_PERPLEXITY_INCREASE
    thread_num: Optional[int] = None
    timeout: float = 900

    def __post_init__(self):
        for name in self.methods:
            lm_method(name)
        if not 0 <= self.min_agreement <= 1:
            raise NanoValueError(f"min_agreement must be in [0, 1], got {self.min_agreement!r}")
        if self.max_perplexity_increase < 0:
            raise NanoValueError(f"max_perplexity_increase must be >= 0, got "
                                 f"{self.max_perplexity_increase!r}")
        if any(not isinstance(b, int) or b < 1 for b in self.batches) or not self.batches:
            raise NanoValueError(f"batch sizes must be whole numbers >= 1, got {self.batches!r}")


class GenerationSearch:
    """Candidates of a causal LM, each judged and timed; ``best()`` is the pick."""

    def __init__(self, model: torch.nn.Module, prompt_ids: torch.Tensor,
                 prompt_mask: torch.Tensor, windows: torch.Tensor, options: GenerationOptions):
        self.model, self.options = model, options
        self.prompt_ids, self.prompt_mask, self.windows = prompt_ids, prompt_mask, windows
        self.rows: list[LMResult] = []
        self._picked: Optional[GeneratingModel] = None

    def run(self) -> "GenerationSearch":
        from tqdm.auto import tqdm

        options = self.options
        original = TorchLM(ORIGINAL, self.model, options.thread_num)
        held_out = HeldOut.from_original(original, self.prompt_ids, self.prompt_mask,
                                         self.windows, options.new_tokens)
        timing_prompt = self.windows[:1, :options.prompt_tokens]
        workdir = tempfile.mkdtemp(prefix="nano-generation-")
        try:
            # Builders fork from a process holding the model; measurers from one holding
            # nothing big. Forked from the model's process (copy-on-write pages, an allocator
            # that keeps what it freed), a 0.43 B Llama's INT4 candidates decoded 10-15%
            # slower than in a fresh process: not what a user's process gets. (The config
            # imports transformers there, which the peak memory should not count.)
            with Zygote({"model": self.model}, janitor_dirs=[workdir]) as builder, \
                    Zygote({"config": self.model.config}, janitor_dirs=[workdir]) as meter:
                with tqdm(total=len(options.methods), desc="optimize_generation",
                          unit="method", disable=None, file=sys.stderr) as bar:
                    for method in options.methods:
                        bar.set_postfix_str(method)
                        self.rows.append(self._try(builder, meter, method, workdir, held_out,
                                                   timing_prompt))
                        bar.update(1)
                self._set_limits()
                self._judge()
                self._final_round(meter, workdir, timing_prompt)
            self._picked = self._load_best(workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return self

    def _try(self, builder: Zygote, meter: Zygote, method: str, workdir: str,
             held_out: HeldOut, timing_prompt: torch.Tensor) -> LMResult:
        reason = unavailable_reason(METHODS[method], self.model) if method != ORIGINAL else None
        if reason:
            return LMResult(method, "skipped", reason)
        path = os.path.join(workdir, method)
        memory = default_memory_limit()  # a blow-up costs the row, not the machine
        built = builder.run(_build, (method, path, self.options.thread_num),
                            self.options.timeout, memory)
        if built.status != "ok":
            return LMResult(method, built.status, f"build: {built.detail}")
        measured = meter.run(_measure, (path, held_out, timing_prompt, self.options.batches,
                                        self.options.new_tokens), self.options.timeout, memory)
        if measured.status != "ok":
            return LMResult(method, measured.status, f"after loading: {measured.detail}")
        return LMResult(method, "ok", build_s=built.result, **measured.result)

    def _set_limits(self) -> None:
        """Each row's limit: bandwidth / its bytes per step, the bandwidth being the most
        shown at a working set as large as its step or larger (a larger one never streams
        faster): its own read, another row's read, or a row's decode. So no row shows more
        than 100%, and noise in one read can only raise a limit, never flatter a row."""
        shown = [(r.bytes_per_step, rate, source) for r in self.rows if r.bytes_per_step
                 for rate, source in (
                     (r.read_bytes_per_s, f"a read of {r.bytes_per_step / 1e6:.0f} MB"),
                     (r.bytes_per_step * r.decode_tokens_per_s(1), f"{r.method}'s decode"))]
        for row in self.rows:
            if row.bytes_per_step:
                row.bandwidth, row.bandwidth_from = max(
                    ((rate, source) for size, rate, source in shown
                     if size >= row.bytes_per_step), key=lambda shown: shown[0])

    def _judge(self) -> None:
        """Reject rows outside the accuracy bounds, relative to the original's row."""
        original = self.result(ORIGINAL)
        if original is None or not original.passes:
            why = f"{original.status}: {original.detail}" if original else "not tried"
            raise SearchFailed(f"the original model could not be run ({why})")
        base = original.perplexity
        for row in self.rows:
            if not row.passes or row.method == ORIGINAL:
                continue
            assert row.agreement is not None and row.perplexity is not None and base
            increase = row.perplexity / base - 1
            if row.agreement < self.options.min_agreement:
                row.status, row.detail = "rejected", (
                    f"greedy agreement {row.agreement:.3f} < {self.options.min_agreement}")
            elif increase > self.options.max_perplexity_increase:
                row.status, row.detail = "rejected", (
                    f"perplexity +{increase:.1%} > +{self.options.max_perplexity_increase:.0%}")

    def _final_round(self, meter: Zygote, workdir: str, timing_prompt: torch.Tensor) -> None:
        """Time the rows close to the fastest again, alternating in one process (as
        ``optimize()``'s final round does), so noise between their windows cannot pick."""
        first = self.options.batches[0]
        fastest = self.best_row().decode_tokens_per_s(first)
        close = sorted((r for r in self.rows if r.passes and r.speed(first)
                        and r.decode_tokens_per_s(first) >= (1 - FINAL_MARGIN) * fastest),
                       key=lambda r: -r.decode_tokens_per_s(first))[:FINAL_ROWS]
        if len(close) < 2:
            return
        if sum(r.peak_memory_bytes for r in close) > psutil.virtual_memory().available / 2:
            logger.warning("the rows close to the fastest (%s) were not timed side by side: "
                           "together they need more than half the free memory",
                           ", ".join(r.method for r in close))
            return
        prompt = timing_prompt[:1].expand(first, -1).contiguous()
        done = meter.run(_side_by_side, ([os.path.join(workdir, r.method) for r in close],
                                         prompt, self.options.new_tokens, FINAL_ROUNDS),
                         self.options.timeout, default_memory_limit())
        if done.status != "ok":
            logger.warning("timing %s side by side failed (%s: %s); the pick rests on each "
                           "row's own timing", ", ".join(r.method for r in close),
                           done.status, done.detail)
            return
        for row, rate in zip(close, done.result):
            row.side_by_side = rate

    def _load_best(self, workdir: str) -> GeneratingModel:
        """The pick, moved out of ``workdir`` (where each row was built, under its method's
        name) and loaded from files it owns: the search's directory is removed when the
        search ends, and a model reading its files from there (ONNX Runtime's) could no
        longer be saved."""
        best = self.best_row()
        if best.method == ORIGINAL:
            return TorchLM(ORIGINAL, self.model, self.options.thread_num)
        kept = tempfile.TemporaryDirectory(prefix="nano-generation-pick-")
        try:
            path = shutil.move(os.path.join(workdir, best.method),
                               os.path.join(kept.name, best.method))
            model = load_lm(path, self.options.thread_num)
        except BaseException:
            kept.cleanup()
            raise
        model.keep_alive = kept
        return model

    # reading the results ---------------------------------------------------------------

    def result(self, method: str) -> Optional[LMResult]:
        return next((r for r in self.rows if r.method == method), None)

    def best_row(self) -> LMResult:
        """The pick's row: ``fastest`` of all rows at the first batch size."""
        return fastest(self.rows, self.options.batches[0])

    def best(self) -> GeneratingModel:
        """The pick, loaded (the original itself when nothing beats it)."""
        if self._picked is None:
            raise NanoValueError("run() the search first")
        return self._picked

    def summary(self) -> str:
        """The table of every row, as ``optimize()`` prints its own."""
        from nano.generation.report import render

        return render(self)


def optimize_generation(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str],
                        held_out_text: str, methods: Optional[Sequence[str]] = None,
                        **choices: Any) -> GenerationSearch:
    """Build, judge and time every generation candidate of ``model``; see GenerationSearch."""
    check_causal_lm(model)
    known = {f for f in GenerationOptions.__dataclass_fields__ if f != "methods"}
    unknown = sorted(set(choices) - known)
    if unknown:
        raise NanoTypeError(f"optimize_generation() got unknown choices {unknown}; it takes "
                            f"{sorted(known)}")
    options = GenerationOptions(tuple(methods) if methods is not None else DEFAULT_METHODS,
                                **choices)
    if ORIGINAL not in options.methods:
        options = GenerationOptions((ORIGINAL, *options.methods), **choices)
    asked = [m for m in options.methods if METHODS[m].runtime == "onnxruntime"] \
        if methods is not None else []
    if asked:  # asked for by name: a model the builder cannot take is a mistake
        from nano.generation.onnxruntime_export import architecture_problem

        problem = architecture_problem(model)  # walks the model once, not once per method
        if problem:
            raise NanoValueError(f"{asked[0]}: {problem}")
    if not callable(tokenizer):
        raise NanoTypeError(f"tokenizer must be the model's tokenizer (callable on text), got "
                            f"{type(tokenizer).__name__}")
    if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise NanoValueError("prompts must be a non-empty list of strings")
    if not isinstance(held_out_text, str) or not held_out_text.strip():
        raise NanoValueError("held_out_text must be text the model was not trained on (a str)")
    encoded = tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left")
    check_lengths(model.config, encoded["input_ids"].shape[1], options.new_tokens)
    windows = text_windows(tokenizer, held_out_text, options.prompt_tokens + options.new_tokens)
    return GenerationSearch(model.eval(), encoded["input_ids"], encoded["attention_mask"],
                            windows, options).run()


def text_windows(tokenizer: Any, text: str, length: int, count: int = 16) -> torch.Tensor:
    """Up to ``count`` non-overlapping windows of ``length`` tokens of ``text``."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    n = min(count, len(ids) // length)
    if n < 1:
        raise NanoValueError(f"held_out_text has {len(ids)} tokens; at least {length} are "
                             f"needed (prompt_tokens + new_tokens)")
    return ids[:n * length].reshape(n, length)
