"""TorchScript: ``jit_fp32``, ``jit_bf16`` (+ ``_channels_last``): trace and freeze, script fallback."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Any, Iterator, Optional, Sequence, TYPE_CHECKING

import torch

from nano.errors import NanoValueError, TraceError
from nano.runtimes.backends.spec import BackendSpec, Flavour
from nano.runtimes.backends.torch_common import (autocast, low_precision_tracing,
                                                 outputs_as_float32, prepare_module)
from nano.runtimes.methods import Method
from nano.runtimes.model import AcceleratedModel, torch_threads
from nano.runtimes.model_files import restore_common
from nano.runtimes.structure import flatten_output, to_channels_last

if TYPE_CHECKING:
    from nano.runtimes.prepare import BuildInputs

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install torch"
SPEC = BackendSpec(
    accelerator="jit", aliases=("torchscript",), precisions=("fp32", "bf16"),
    candidates=(Flavour(), Flavour(channels_last=True), Flavour("bf16"),
                Flavour("bf16", channels_last=True)),
    converts=True, channels_last=True, options=("jit_method", "jit_strict"))


class TorchScriptModel(AcceleratedModel):
    """A frozen TorchScript module taking flat tensors (traced) or the original call (scripted)."""

    accelerator = "jit"
    artifact = "model.pt"
    frozen_graph = True

    def __init__(self, module, method, signature, output, thread_num, scripted: bool = False):
        super().__init__(method, signature, output, thread_num)
        self.module = module
        self.scripted = scripted

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.signature is not None:
            return super().forward(*args, **kwargs)
        # scripted without a sample: the script takes the original call as it is
        if self.method.channels_last:
            args, kwargs = to_channels_last(args), to_channels_last(kwargs)
        with torch_threads(self.thread_num), torch.no_grad(), autocast(self.method):
            return self.finish(outputs_as_float32(self.module(*args, **kwargs)))

    def run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if self.method.channels_last:
            inputs = to_channels_last(list(inputs))
        with torch_threads(self.thread_num), torch.no_grad():
            if self.scripted:
                args, kwargs = self.recorded_io()[0].rebuild(inputs)
                with autocast(self.method):
                    return flatten_output(self.module(*args, **kwargs))
            return flatten_output(self.module(*inputs))

    def save_artifacts(self, directory: str) -> dict:
        torch.jit.save(self.module, os.path.join(directory, "model.pt"))
        return {"scripted": self.scripted}

    @classmethod
    def load_artifacts(cls, directory: str, meta: dict,
                       model: Optional[torch.nn.Module]) -> AcceleratedModel:
        method, signature, output, threads = restore_common(meta)
        module = torch.jit.load(os.path.join(directory, "model.pt"), map_location="cpu")
        return cls(module, method, signature, output, threads, meta["extra"].get("scripted", False))


def unavailable_reason(method: Method) -> Optional[str]:
    return None


@contextlib.contextmanager
def lightning_scripting(module: torch.nn.Module) -> Iterator[None]:
    """Mark the LightningModules in ``module`` as being scripted while torch.jit looks at
    them. torch.jit probes every attribute with hasattr(), and a LightningModule's
    ``trainer`` raises RuntimeError (not AttributeError) outside a Trainer, which failed
    every trace of a LightningModule; Lightning's own ``to_torchscript`` sets this flag
    the same way."""
    flagged = [m for m in module.modules()
               if getattr(m, "_jit_is_scripting", None) is False
               and "_jit_is_scripting" not in m.__dict__]  # the class's default, not set here
    for m in flagged:
        m.__dict__["_jit_is_scripting"] = True
    try:
        yield
    finally:
        for m in flagged:
            del m.__dict__["_jit_is_scripting"]


def trace_and_freeze(module: torch.nn.Module, sample: Sequence[torch.Tensor], method: Method,
                     strict: bool = False) -> torch.jit.ScriptModule:
    """``module`` traced on ``sample`` (under autocast for bf16) and frozen."""
    # Autocast must be recorded as explicit casts in the graph, so that the frozen
    # module runs in bf16 without an autocast context around the call.
    previous = torch._C._jit_set_autocast_mode(False)
    try:
        with torch.no_grad(), autocast(method), low_precision_tracing(method), \
                lightning_scripting(module):
            traced = torch.jit.trace(module, tuple(sample), check_trace=False, strict=strict)
            return torch.jit.freeze(traced.eval())
    finally:
        torch._C._jit_set_autocast_mode(previous)


def _script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is in maintenance
        with lightning_scripting(module):
            return torch.jit.freeze(torch.jit.script(module).eval())


JIT_METHODS = (None, "trace", "script")


def without_sample(model: torch.nn.Module, method: Method,
                   thread_num: Optional[int] = None) -> TorchScriptModel:
    """``torch.jit.script`` the model: scripting needs no input sample (BigDL's
    ``trace(model, accelerator="jit")``). It compiles the Python code itself, so no
    fresh-values check is needed: nothing was recorded from one input."""
    from nano.runtimes.prepare import private_eval_copy

    if method.option_dict.get("jit_method") == "trace":
        raise NanoValueError("jit_method='trace' needs input_sample; without one Nano scripts")
    try:
        scripted = _script(prepare_module(private_eval_copy(model), method))
    except Exception as e:
        from nano.runtimes.error_summary import summarize_error

        raise NanoValueError(f"without input_sample the model must be scriptable, and "
                             f"torch.jit.script failed ({summarize_error(e)}); pass input_sample "
                             f"to trace it instead") from e
    return TorchScriptModel(scripted, method, None, None, thread_num, scripted=True)


def build(method: Method, inputs: BuildInputs) -> TorchScriptModel:
    """Trace (or, with ``jit_method="script"`` or when the trace fails or is proven wrong on
    fresh inputs, script) the model; the result is checked against the original."""
    from nano.runtimes.error_summary import summarize_error
    from nano.runtimes.structure import FlatModule
    from nano.runtimes.control_flow import baked_decision, refusal
    from nano.runtimes.verify import check_conversion, tracer_warnings

    options = method.option_dict
    jit_method = options.get("jit_method")
    module = prepare_module(inputs.model, method)
    sample = inputs.flat_sample()
    if method.channels_last:
        sample = to_channels_last(sample)

    def accept(frozen, scripted):
        model = TorchScriptModel(frozen, method, inputs.signature, inputs.output,
                                 inputs.thread_num, scripted)
        check_conversion(model, inputs, method.precision,
                         "the TorchScript " + ("script" if scripted else "trace"), warned)
        return model

    def untraceable() -> None:
        """Refuse a trace that froze a decision of forward (see control_flow)."""
        branch = baked_decision(inputs)
        if branch:
            raise TraceError(refusal("a TorchScript trace", branch,
                                     "leave jit_method unset (Nano then scripts it)"))

    warned: list = []
    if jit_method != "script":
        try:
            with tracer_warnings() as warned:
                frozen = trace_and_freeze(FlatModule(module, inputs.signature), sample, method,
                                bool(options.get("jit_strict", False)))
            untraceable()
            return accept(frozen, False)
        except Exception as trace_error:
            if jit_method == "trace":
                raise
            logger.info("TorchScript trace refused (%s); scripting instead",
                     summarize_error(trace_error))
            try:
                return accept(_script(module), True)
            except Exception as script_error:
                raise RuntimeError(f"cannot trace the model ({summarize_error(trace_error)}) "
                                   f"and scripting failed too ({summarize_error(script_error)})"
                                   ) from trace_error
    return accept(_script(module), True)


MODEL_CLASS = TorchScriptModel
