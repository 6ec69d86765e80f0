"""Runtime backends, one module each, found by name and described by their own ``SPEC``.

Adding a runtime is one module here (``SPEC``, ``MODEL_CLASS``, ``build``,
``unavailable_reason``, ``INSTALL_HINT``: see ``spec.Backend``) plus its name in
``BACKENDS``. The method table, accelerator names, aliases and INT8 routing are
derived from the specs. Importing a backend module is cheap: each imports its
runtime only when it builds or loads.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Optional

from nano.errors import NanoError, NanoValueError
from nano.inference.backends.spec import BackendSpec
from nano.inference.methods import Method
from nano.inference.prepare import index_bounds
from nano.launcher.capability import current
from nano.noise import quiet_third_party

if TYPE_CHECKING:
    from nano.inference.prepare import BuildInputs
    import torch
    from nano.inference.model import AcceleratedModel

# Module names under nano.inference.backends, in the order optimize() tries their candidates.
BACKENDS = (
    "torch_eager",
    "ipex",
    "torchscript",
    "ipex_jit",
    "torch_compile",
    "onnxruntime_fp32",
    "openvino_ir",
    "openvino_compile",
    "pt2e_int8",
    "torchao_int8",
    "onnxruntime_int8",
    "openvino_nncf",
    "ipex_int8",
)


class MissingDependency(NanoError, ImportError):
    """An optional runtime is not installed; the message says what to install."""


@functools.lru_cache(maxsize=None)
def backend_modules() -> tuple[ModuleType, ...]:
    """Every registered backend module, imported (each defers its runtime's import)."""
    return tuple(importlib.import_module(f"{__name__}.{name}") for name in BACKENDS)


def specs() -> list[BackendSpec]:
    """Every backend's spec, in registry order."""
    return [module.SPEC for module in backend_modules()]


def accelerators() -> tuple[str, ...]:
    """The accelerator names the backends build, in registry order."""
    return tuple(dict.fromkeys(s.accelerator for s in specs()))


def accelerator_aliases() -> dict[str, str]:
    """Every spelling users pass as ``accelerator=`` -> its accelerator."""
    table = {}
    for s in specs():
        table[s.accelerator] = s.accelerator
        table.update({alias: s.accelerator for alias in s.aliases})
    return table


def backend_for(method: Method) -> ModuleType:
    """The module that builds ``method``, or an error listing what is registered."""
    for module in backend_modules():
        if module.SPEC.builds(method):
            return module
    what = f"{method.accelerator} {'INT8' if method.precision == 'int8' else 'floating point'}"
    raise NanoValueError(f"no backend builds {method.name} ({what}"
                         f"{' with IPEX' if method.use_ipex else ''}); registered: "
                         f"{', '.join(BACKENDS)}")


def quantizer_for(accelerator: str, use_ipex: bool = False) -> ModuleType:
    """The INT8 builder for a user's ``accelerator`` (PyTorch's is torch.compile's, or IPEX's
    with ``use_ipex``), or an error listing the accelerators that have one (never a fallback
    to another runtime)."""
    for module in backend_modules():
        spec = module.SPEC
        if spec.quantizer is not None and spec.use_ipex == use_ipex \
                and accelerator in (spec.accelerator, *spec.serves):
            return module
    raise NanoValueError(f"no INT8 quantizer for accelerator {accelerator!r}"
                         f"{' with use_ipex=True' if use_ipex else ''}; "
                         f"{int8_accelerators_hint(use_ipex)}")


def int8_accelerators_hint(use_ipex: bool = False) -> str:
    """Which ``accelerator=`` values have an INT8 quantizer, as a sentence tail."""
    names = [n for s in specs() if s.quantizer is not None and s.use_ipex == use_ipex
             for n in (*s.serves, s.accelerator)]
    spelled = dict.fromkeys("None" if n == "pytorch" else repr(n) for n in names)
    return (f"INT8 runs with accelerator {', '.join(spelled)}"
            f"{' with use_ipex=True' if use_ipex else ''}")


def unavailable_reason(method: Method) -> Optional[str]:
    """Why ``method`` cannot run here ("missing dependency: pip install ..."), or None."""
    module = backend_for(method)
    if method.precision not in module.SPEC.precisions:
        return (f"{method.accelerator} builds {', '.join(module.SPEC.precisions)} here, not "
                f"{method.precision}")
    return module.unavailable_reason(method)


def backend_class(method: Method) -> type[AcceleratedModel]:
    """The AcceleratedModel subclass that loads a saved model built by ``method``."""
    return backend_for(method).MODEL_CLASS


def _require_available(method: Method) -> None:
    reason = unavailable_reason(method)
    if reason:
        raise MissingDependency(f"{method.name} is unavailable: {reason}")


def _warn_if_emulated(method: Method) -> None:
    """One line where the CPU lacks the method's precision: PyTorch emulates bf16/fp16 (slower
    than fp32), OpenVINO runs f32 instead. optimize() leaves such methods out."""
    capability = current()
    if capability.emulates(method.precision):
        how = (f"OpenVINO has no {method.precision} kernels for it, so {method.name} computes "
               f"in f32" if method.accelerator == "openvino" else
               f"{method.name} is emulated: expect it slower than fp32, with "
               f"{method.precision}'s rounding")
        isa = capability.vector or capability.arch
        warnings.warn(f"this CPU has no native {method.precision} ({isa} only): {how}",
                      RuntimeWarning, stacklevel=4)


def build(method: Method, inputs: BuildInputs) -> AcceleratedModel:
    """Build ``method`` from prepared inputs (see ``nano.inference.prepare``)."""
    _require_available(method)
    _warn_if_emulated(method)
    module = backend_for(method)
    model = module.build(method, inputs)
    if module.SPEC.converts:  # a graph that may fix the sample's sizes (eager kinds fix none)
        model.record_shapes([t.shape for t in inputs.flat_sample()], inputs.dynamic_dims())
    # ONNX Runtime and OpenVINO do not range-check ids; every kind checks them alike
    return model.record_index_bounds(index_bounds(inputs))


def build_without_sample(method: Method, model: torch.nn.Module,
                         thread_num: Optional[int] = None) -> AcceleratedModel:
    """Build ``method`` with no input sample, where the runtime needs none (plain PyTorch,
    scripted TorchScript, compile); else an error saying input_sample is required."""
    _require_available(method)
    _warn_if_emulated(method)
    builder = getattr(backend_for(method), "without_sample", None)
    if builder is None:
        raise NanoValueError(f"input_sample is required for {method.name}: pass one example "
                             f"input (a tensor, a tuple of inputs, a dict of keyword inputs or "
                             f"a DataLoader)")
    return builder(model, method, thread_num)


def module_available(name: str, install: str) -> Optional[str]:
    """None if ``name`` imports, else the "missing dependency" reason."""
    try:
        with quiet_third_party():  # the first import of a runtime may log its own troubles
            importlib.import_module(name)
    except ImportError:
        return f"missing dependency: {install}"
    return None
