"""The registry: every runtime backend, found by name, and what is derived from their specs.

Adding a runtime is one module in ``backends/`` (``SPEC``, ``MODEL_CLASS``, ``build``,
``unavailable_reason``, ``INSTALL_HINT``: see ``backends.spec.Backend``) plus its name in
``BACKENDS``. The method table, accelerator names and aliases, the INT8 routing and the class
that loads a saved model are read from the specs here. The registry sits above the types it
returns (``Method``, ``AcceleratedModel``) and the backends: none of them imports it. Importing
a backend module is cheap: each imports its runtime only when it builds or loads.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterable, Optional

from nano.errors import NanoValueError
from nano.launcher.capability import current
from nano.runtimes.availability import MissingDependency
from nano.runtimes.backends.spec import BackendSpec
from nano.runtimes.embedding_ids import index_bounds
from nano.runtimes.methods import Method, choices, normalize_precision
from nano.runtimes.sources import is_onnx_source

if TYPE_CHECKING:
    import torch

    from nano.runtimes.model import AcceleratedModel
    from nano.runtimes.prepare import BuildInputs

# Module names under nano.runtimes.backends, in the order optimize() tries their candidates.
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


@functools.lru_cache(maxsize=None)
def backend_modules() -> tuple[ModuleType, ...]:
    """Every registered backend module, imported (each defers its runtime's import)."""
    return tuple(importlib.import_module(f"nano.runtimes.backends.{name}") for name in BACKENDS)


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
    if method.accelerator not in accelerators():
        raise NanoValueError(f"unknown accelerator {method.accelerator!r}; valid: "
                             f"{choices(accelerators())}")
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
    to another runtime).

    BigDL-Nano's ``accelerator="jit"`` INT8 was IPEX's static INT8 traced to TorchScript: it
    gets that builder without ``use_ipex=True`` where IPEX imports, and where it does not,
    an error naming the calls that give INT8 here."""
    for ipex in ((use_ipex,) if use_ipex else (False, True)):
        for module in backend_modules():
            spec = module.SPEC
            if spec.quantizer is not None and spec.use_ipex == ipex \
                    and accelerator in (spec.accelerator, *spec.serves):
                if ipex == use_ipex:
                    return module
                reason = module.unavailable_reason(Method(spec.accelerator, "int8",
                                                          use_ipex=True))
                if reason is None:
                    return module
                raise NanoValueError(
                    f"accelerator={accelerator!r} INT8 is IPEX's static INT8 traced to "
                    f"TorchScript, unavailable here ({reason}); without IPEX, "
                    f"{int8_accelerators_hint()} (None: PyTorch's own INT8, compiled)")
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


def preload_modules(methods: Iterable[Method]) -> tuple[str, ...]:
    """The modules the builds of ``methods`` import, each once, for a zygote to preload."""
    names: dict[str, None] = {}
    for method in methods:
        if method.name != "original" and unavailable_reason(method) is None:
            names.update(dict.fromkeys(backend_for(method).SPEC.preload))
    return tuple(names)


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
    """Build ``method`` from prepared inputs (see ``nano.runtimes.prepare``)."""
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




def normalize_accelerator(value: Optional[str]) -> str:
    """Map ``None``/"pytorch"/"jit"/... to a canonical accelerator name, or raise listing them."""
    if value is None:
        return "pytorch"
    aliases = accelerator_aliases()
    key = value.lower() if isinstance(value, str) else value
    if key not in aliases:
        raise NanoValueError(f"unknown accelerator {value!r}; valid: None (plain PyTorch), "
                             f"{choices(accelerators())}")
    return aliases[key]


def runtime_options() -> tuple[str, ...]:
    """Options a runtime reads when it builds or loads a model (the rest are INT8 settings)."""
    return tuple(dict.fromkeys(o for s in specs() for o in s.options))


def applicable_accelerators(model: torch.nn.Module) -> Optional[tuple]:
    """Accelerators that can run this model (an ONNX file given as the model runs only on the
    runtimes that read ONNX), or None for all."""
    if is_onnx_source(model):
        return tuple(dict.fromkeys(s.accelerator for s in specs() if s.reads_onnx))
    return None


@functools.lru_cache(maxsize=None)
def method_table() -> dict[str, Method]:
    """Every candidate optimize() knows, by name, in the order it tries them: each backend's
    ``SPEC.candidates`` (INT8 ones need calibration data)."""
    table: dict[str, Method] = {}
    for spec in specs():
        for f in spec.candidates:
            method = Method(spec.accelerator, f.precision, f.channels_last, spec.use_ipex,
                            f.variant)
            if method.name in table:
                raise AssertionError(f"two backends offer {method.name}")
            table[method.name] = method
    return table


def get_method(name: str) -> Method:
    """Look a method up by name, or raise listing the valid names."""
    table = method_table()
    if name not in table:
        raise NanoValueError(f"unknown method {name!r}; valid: {choices(sorted(table))}")
    return table[name]


def select_methods(includes: Optional[Iterable[str]] = None,
                   excludes: Optional[Iterable[str]] = None,
                   accelerator: Any = False, precision: Any = None) -> list[Method]:
    """The candidate list after includes/excludes and accelerator/precision filters.

    ``accelerator=False`` means no accelerator filter (``None`` means plain PyTorch).
    """
    for group in (includes or []), (excludes or []):
        for name in group:
            get_method(name)  # raises on typos
    table = method_table()
    chosen = [table[n] for n in includes] if includes else list(table.values())
    if "original" not in [m.name for m in chosen]:
        chosen.insert(0, table["original"])  # the baseline everything is compared with
    excluded = set(excludes or [])
    if "original" in excluded:
        raise NanoValueError("'original' cannot be excluded: it is the baseline for speed and "
                             "accuracy")
    chosen = [m for m in chosen if m.name not in excluded]
    if accelerator is not False:
        accs = accelerator if isinstance(accelerator, (list, tuple)) else [accelerator]
        wanted = {normalize_accelerator(a) for a in accs}
        chosen = [m for m in chosen if m.accelerator in wanted or m.name == "original"]
    if precision is not None:
        precs = precision if isinstance(precision, (list, tuple)) else [precision]
        wanted = {normalize_precision(p) for p in precs}
        chosen = [m for m in chosen if m.precision in wanted or m.name == "original"]
    return chosen
