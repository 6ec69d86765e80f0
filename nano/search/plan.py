"""Which methods optimize() tries, in what order, and which it leaves out as unable to win.

``search_mode="default"`` tries the likely winners first and skips, with a reason in
the table, the methods the rows so far show cannot win:

- **a family found hopeless**: once a method of a runtime (a family: ``jit``,
  ``compile``, ``onnxruntime``, ...) ran over HOPELESS times the best passing row so
  far, or was stopped early as too slow, the family's remaining methods are left out
  (each family's methods are tried likely-fastest first, so the rest are expected
  slower still);
- **a dominated runtime**: ``compile`` and ``openvino_compile`` at a precision are left
  out once ``openvino`` at that precision passed, or was itself found hopeless (on
  every model of the benchmarks OpenVINO was the faster of the two, at every
  precision, and it builds in a fraction of the time);
- **the same static INT8 in another format**: once a runtime's static INT8 (ONNX
  Runtime's QDQ, say) failed the accuracy judgement, its other static formats
  (QOperator) are left out: their scales come from the same calibration;
- **channels_last on a model without convolutions**: the memory format changes nothing
  there;
- **bf16 or fp16 on a processor without it natively** (in every mode): emulated, it ran
  4-5x slower than fp32 (AMD Zen 3, AVX2 only); ``nano.launcher.capability`` decides.

``search_mode="all"`` and ``"grid"`` try every selected method, and a method named in
``includes`` is never left out.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Optional, TYPE_CHECKING

import torch

from nano.launcher.capability import CpuCapability, current
from nano.runtimes.registry import backend_for

if TYPE_CHECKING:
    from nano.runtimes.methods import Method
    from nano.search.candidates import CandidateResult

logger = logging.getLogger(__name__)

# A family is dropped once one of its methods runs this many times slower than the best
# passing row so far (FINAL_WINDOW, 1.5, would keep it out of the final round already;
# 2 leaves room for a noisy measurement).
HOPELESS = 2.0

# The order to try methods in, likely winners first, per model family. Measured on the
# reference machine (2-core Zen 4): ResNet-18 batch 1 for "conv" (benchmarks/time_to_pick.py)
# and all-MiniLM-L6-v2 batch 8 for "dense" (python -m nano). Within a family the faster
# methods come first, which is what lets a slow one stand for the rest: ONNX Runtime's
# dynamic INT8 ("integer") goes after the static formats, as it was 10x slower than they
# on the CNN and on par on MiniLM. Methods not listed (a newly registered runtime)
# follow, in the method table's order.
LIKELY_FIRST = {
    "conv": (
        "openvino_int8", "onnxruntime_int8_qlinear", "onnxruntime_int8_qdq",
        "onnxruntime_int8_integer", "compile_int8", "compile_int8_torchao", "int8_ipex",
        "openvino_bf16", "openvino_fp16", "compile_bf16", "compile_bf16_channels_last",
        "jit_bf16_channels_last", "jit_bf16_ipex", "jit_bf16", "bf16_ipex",
        "bf16_channels_last", "bf16",
        "openvino_fp32", "onnxruntime_fp32", "compile_fp32", "openvino_compile_fp32",
        "jit_fp32_channels_last", "jit_fp32_ipex", "jit_fp32", "fp32_ipex",
        "fp32_channels_last",
    ),
    "dense": (
        "openvino_int8", "onnxruntime_int8_qlinear", "onnxruntime_int8_qdq",
        "onnxruntime_int8_integer", "compile_int8_torchao", "compile_int8", "int8_ipex",
        "openvino_bf16", "openvino_fp16", "compile_bf16", "jit_bf16_ipex", "jit_bf16",
        "bf16_ipex", "bf16",
        "openvino_fp32", "onnxruntime_fp32", "compile_fp32", "openvino_compile_fp32",
        "jit_fp32_ipex", "jit_fp32", "fp32_ipex",
        "jit_bf16_channels_last", "bf16_channels_last", "compile_bf16_channels_last",
        "jit_fp32_channels_last", "fp32_channels_last",
    ),
}

# accelerator -> the accelerator that beat it at every precision on the benchmarks
DOMINATED_BY = {"compile": "openvino", "openvino_compile": "openvino"}

_CONVOLUTIONS = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d,
                 torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)


def model_family(model: torch.nn.Module) -> str:
    """"conv" when convolutions hold most of the parameters, else "dense" (transformers,
    MLPs, recurrent models)."""
    total = conv = 0
    for module in model.modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        total += own
        if isinstance(module, _CONVOLUTIONS):
            conv += own
    return "conv" if total and conv * 2 >= total else "dense"


def _family(method: Method) -> tuple:
    return method.accelerator, method.use_ipex


def _static_int8(method: Method) -> bool:
    if method.precision != "int8":
        return False
    quantizer = backend_for(method).SPEC.quantizer
    return quantizer is not None and method.variant != quantizer.dynamic_variant


def _same_static_quantization(a: Method, b: Method) -> bool:
    """``a`` and ``b`` are the same runtime's static INT8 (their scales come from the same
    calibration; only the graph format differs, as ONNX Runtime's QDQ and QOperator)."""
    from nano.search.int8_ladder import base_of

    return (a != b and _family(a) == _family(b) and _static_int8(a) and _static_int8(b)
            and base_of(a) != base_of(b))  # steps of one INT8 ladder are its remedy


class SearchPlan:
    """The search order and the skip rules of one optimize() (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, search_mode: str = "default",
                 includes: Optional[Iterable[str]] = None,
                 capability: Optional[CpuCapability] = None):
        self.family = model_family(model)
        self.capability = capability or current()  # what this CPU computes natively
        self.exhaustive = search_mode != "default"
        self.named = frozenset(includes or ())
        self.has_convolution = any(isinstance(m, _CONVOLUTIONS) for m in model.modules())
        self._hopeless: dict = {}  # family -> why it was dropped
        # the methods left out because faster ones (of any precision) ran: what a pick of
        # one precision may have lost
        self.outpaced: set = set()

    def order(self, methods: list) -> list:
        """``methods`` with the original first, then likely winners first (as given in
        the other modes, and when the user listed them in ``includes``)."""
        if self.exhaustive or self.named:
            return list(methods)
        rank = {name: i for i, name in enumerate(LIKELY_FIRST[self.family])}
        return sorted(methods, key=lambda m: (m.name != "original",
                                              rank.get(m.name, len(rank))))

    def skip_reason(self, method: Method, rows: list,
                    passes: Callable[[CandidateResult], bool]) -> Optional[str]:
        """Why ``method`` is left out given the ``rows`` so far, or None to try it.
        ``passes(row)``: the row passes the default accuracy judgement."""
        if method.name in self.named or method.name == "original":
            return None
        if self.capability.emulates(method.precision):
            return (f"skipped: {self.capability.emulation_note(method.precision)} (name it "
                    f"in includes= to try it)")
        if self.exhaustive:
            return None
        if method.channels_last and not self.has_convolution:
            return ("skipped: channels_last only changes how convolutions lay out memory, and "
                    "this model has none")
        for r in rows:
            if _same_static_quantization(r.method, method) and r.usable and not passes(r):
                return (f"skipped: {r.name} failed the accuracy judgement, and {method.name} "
                        f"quantizes the same way (static, same calibration) in another format")
        why = self._outpaced_reason(method, rows, passes)
        if why:
            self.outpaced.add(method.name)
        return why

    def _outpaced_reason(self, method: Method, rows: list,
                         passes: Callable[[CandidateResult], bool]) -> Optional[str]:
        """Why faster rows already make ``method`` unable to win, or None."""
        self._note_hopeless(rows, passes)
        dominator = DOMINATED_BY.get(method.accelerator)
        if dominator is not None:
            for r in rows:
                if r.method.accelerator == dominator and r.method.precision == method.precision \
                        and not r.method.use_ipex and r.usable and passes(r):
                    return (f"skipped: {r.name} passed, and {dominator} ran faster than "
                            f"{method.accelerator} on every benchmark model")
            if (dominator, False) in self._hopeless:
                return (f"skipped: {method.accelerator} ran slower than {dominator} on every "
                        f"benchmark model, and {self._hopeless[(dominator, False)]}")
        why = self._hopeless.get(_family(method))
        return f"skipped: {why}; its other methods are expected slower" if why else None

    def _note_hopeless(self, rows: list, passes: Callable[[CandidateResult], bool]) -> None:
        """Record each family that has a method too slow to win."""
        timed = [r for r in rows if r.usable and passes(r)]
        best = min(timed, key=lambda r: r.latency.median) if timed else None
        for r in rows:
            if r.name == "original" or _family(r.method) in self._hopeless:
                continue
            if r.status == "slow":
                self._hopeless[_family(r.method)] = f"{r.name} was stopped early as too slow"
            elif best is not None and r.usable \
                    and r.latency.median > HOPELESS * best.latency.median:
                self._hopeless[_family(r.method)] = (
                    f"{r.name} ran {r.latency.median / best.latency.median:.1f}x the best so "
                    f"far ({best.name})")
