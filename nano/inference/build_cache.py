"""An on-disk cache of built candidates, so a second optimize() of the same model reuses its
conversions and quantizations (latency and accuracy are measured again every time).

An entry is a saved model directory (checksummed, written atomically by
``AcceleratedModel.save``) under a key made of everything a build depends on:
the model's weights, its code and configuration, the sample's structure,
shapes and dtypes, the dynamic dims, the calibration data, the method with
its options, and the versions of Python, Nano and the runtimes. An entry that
does not load is removed and rebuilt, never used. Only kinds that load
without the user's module are kept (the torch kinds rebuild in a moment).

The directory is ``cache_dir=``, else ``$NANO_CACHE_DIR``, else
``$XDG_CACHE_HOME/nano`` (``~/.cache/nano``); ``NANO_CACHE_DIR=off`` or
``no_cache=True`` turns it off.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Optional

import torch

from nano.inference.methods import Method
from nano.inference.structure import flatten_output

# packages whose version changes what a build produces (Nano's own included)
RUNTIME_PACKAGES = ("nano", "torch", "onnx", "onnxscript", "onnxruntime", "openvino", "nncf", "torchao",
                    "neural-compressor-pt", "intel-extension-for-pytorch")


def cache_root(cache_dir: Optional[str], no_cache: bool) -> Optional[str]:
    """The cache directory to use, or None when caching is off."""
    if no_cache:
        return None
    root = cache_dir or os.environ.get("NANO_CACHE_DIR")
    if root == "off":
        return None
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                 ".cache")
        root = os.path.join(base, "nano")
    return os.path.join(root, "builds")


def _versions() -> dict:
    import platform

    found: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in RUNTIME_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _code(model: torch.nn.Module) -> list:
    """The source of every module class in ``model`` (its qualified name where there is
    none), and the modules' printed configuration."""
    parts = []
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: c.__qualname__):
        try:
            parts.append(inspect.getsource(cls))
        except (OSError, TypeError):
            parts.append(f"{cls.__module__}.{cls.__qualname__}")
    return parts + [repr(model)]


def _update_with_tensors(digest: Any, value: Any) -> None:
    for t in flatten_output(value):
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def model_key(model: torch.nn.Module, sample: tuple, dynamic_axes: Any,
              calib: Optional[list]) -> str:
    """The part of every entry's key that is the same for one search."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"versions": _versions(), "code": _code(model),
                              "dynamic_axes": repr(dynamic_axes)}, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        _update_with_tensors(digest, tensor)
    args, kwargs = sample
    digest.update(repr([(type(v).__name__, getattr(v, "shape", None), getattr(v, "dtype", None))
                        for v in flatten_output((args, kwargs))]).encode())
    digest.update(repr(sorted(kwargs)).encode())
    for call in calib or []:
        _update_with_tensors(digest, call)
    return digest.hexdigest()[:32]


def entry_dir(root: str, key: str, method: Method) -> str:
    """Where ``method``'s build for ``key`` is kept."""
    options = hashlib.sha256(json.dumps(method.to_json(), sort_keys=True,
                                        default=repr).encode()).hexdigest()[:12]
    return os.path.join(root, key, f"{method.name}-{options}")


def store(saved: str, entry: str) -> None:
    """Copy the saved model directory ``saved`` into the cache as ``entry``, atomically."""
    os.makedirs(os.path.dirname(entry), exist_ok=True)
    partial = f"{entry}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(saved, partial)
    shutil.rmtree(entry, ignore_errors=True)
    os.replace(partial, entry)
