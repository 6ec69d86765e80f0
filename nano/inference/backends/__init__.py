"""Runtime backends, one module each, found through a registry and imported lazily.

Adding a runtime is one module here (exposing ``MODEL_CLASS``, ``build``,
``unavailable_reason`` and ``INSTALL_HINT``) plus one line in ``_REGISTRY``.
"""

from __future__ import annotations

import importlib
from typing import Optional

from nano.inference.methods import Method
from nano.noise import quiet_third_party

# registry key -> module; the key is the method's accelerator, or "ipex" for use_ipex methods
_REGISTRY = {
    "pytorch": "nano.inference.backends.torch_eager",
    "jit": "nano.inference.backends.torchscript",
    "compile": "nano.inference.backends.torch_compile",
    "onnxruntime": "nano.inference.backends.onnxruntime_fp32",
    "openvino": "nano.inference.backends.openvino_ir",
    "ipex": "nano.inference.backends.ipex",
    # INT8: the quantizers, one per runtime
    "compile_int8": "nano.inference.backends.pt2e_int8",
    "onnxruntime_int8": "nano.inference.backends.onnxruntime_int8",
    "openvino_int8": "nano.inference.backends.openvino_nncf",
}


class MissingDependency(ImportError):
    """An optional runtime is not installed; the message says what to install."""


def registry_key(method: Method) -> str:
    """Which backend module builds ``method``."""
    if method.use_ipex:
        return "ipex"
    if method.precision == "int8":
        return f"{method.accelerator}_int8"
    return method.accelerator


def backend_module(key: str):
    """Import a backend module by registry key."""
    if key not in _REGISTRY:
        raise ValueError(f"no backend builds {key.replace('_', ' ')}; known: "
                         f"{', '.join(_REGISTRY)}")
    return importlib.import_module(_REGISTRY[key])


def unavailable_reason(method: Method) -> Optional[str]:
    """Why ``method`` cannot run here ("missing dependency: pip install ..."), or None."""
    return backend_module(registry_key(method)).unavailable_reason(method)


def backend_class(method: Method):
    """The AcceleratedModel subclass that loads a saved model built by ``method``."""
    return backend_module(registry_key(method)).MODEL_CLASS


def _require_available(method: Method) -> None:
    reason = unavailable_reason(method)
    if reason:
        raise MissingDependency(f"{method.name} is unavailable: {reason}")


def build(method: Method, inputs) -> "AcceleratedModel":  # noqa: F821
    """Build ``method`` from prepared inputs (see ``nano.inference.prepare``)."""
    _require_available(method)
    return backend_module(registry_key(method)).build(method, inputs)


def build_without_sample(method: Method, model,
                         thread_num=None) -> "AcceleratedModel":  # noqa: F821
    """Build ``method`` with no input sample, where the runtime needs none (plain PyTorch,
    scripted TorchScript, compile); else an error saying input_sample is required."""
    from nano.errors import NanoValueError

    _require_available(method)
    builder = getattr(backend_module(registry_key(method)), "without_sample", None)
    if builder is None or method.precision == "int8":
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
