"""An on-disk cache of built candidates, so a second optimize() of the same model reuses its
conversions and quantizations (latency and accuracy are measured again every time).

An entry is a saved model directory (checksummed, written atomically by
``AcceleratedModel.save``) under a key made of everything a build depends on:
the model's weights, its code and configuration, the sample's structure,
shapes and dtypes, the dynamic dims, the calibration data, the method with
its options, and the versions of Python, Nano and the runtimes. An entry that
does not load is removed and rebuilt, never used. Only kinds that load
without the user's module are kept (the torch kinds rebuild in a moment). A build
that failed is remembered under the same key (not a transient error: no OSError or
MemoryError), so the next search does not spend its time failing again.

The directory is ``cache_dir=``, else ``$NANO_CACHE_DIR``, else
``$XDG_CACHE_HOME/nano`` (``~/.cache/nano``); ``NANO_CACHE_DIR=off`` or
``no_cache=True`` turns it off. The cache is kept under ``$NANO_CACHE_MAX_GB`` GB
(default 5) by removing the least recently used models' entries.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Optional

import torch

from nano.runtimes.methods import Method
from nano.runtimes.structure import flatten_output
from nano.launcher.capability import current

# a store's copy in progress: ``<entry>.<pid>.partial``
PARTIAL = ".partial"
# beside an entry: why its build failed (``<entry>.failed``, JSON)
FAILED = ".failed"
# errors that say something about the machine at that moment, not about the build
TRANSIENT_ERRORS = ("OSError", "PermissionError", "MemoryError", "TimeoutError",
                    "ConnectionError", "KeyboardInterrupt")
# how large the cache may grow (NANO_CACHE_MAX_GB overrides): ResNet-18's entries take
# about 0.4 GB
DEFAULT_MAX_GB = 5.0

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
    # the processor too: INT8 built for an int8 dot product saturates on a CPU without one
    digest.update(json.dumps({"versions": _versions(), "code": _code(model),
                              "dynamic_axes": repr(dynamic_axes), "cpu": current().to_dict()},
                             sort_keys=True).encode())
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
    key_dir = os.path.dirname(entry)
    os.makedirs(key_dir, exist_ok=True)
    _remove_abandoned_copies(key_dir)
    partial = f"{entry}.{os.getpid()}{PARTIAL}"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(saved, partial)
    shutil.rmtree(entry, ignore_errors=True)
    os.replace(partial, entry)
    touch(entry)


def remember_failure(entry: str, detail: str) -> None:
    """Keep why ``entry``'s build failed, so the next search of the same model (same key:
    same weights, code and runtime versions) does not fail at length again. Transient
    errors are not kept."""
    if detail.split(":", 1)[0].strip() in TRANSIENT_ERRORS:
        return
    os.makedirs(os.path.dirname(entry), exist_ok=True)
    partial = f"{entry}{FAILED}.{os.getpid()}{PARTIAL}"
    with open(partial, "w") as f:
        json.dump({"detail": detail}, f)
    os.replace(partial, entry + FAILED)
    touch(entry)


def remembered_failure(entry: str) -> Optional[str]:
    """Why ``entry``'s build failed in an earlier search, or None (a marker that does not
    read is removed)."""
    path = entry + FAILED
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            detail = json.load(f)["detail"]
        if isinstance(detail, str):
            touch(entry)
            return detail
    except (OSError, ValueError, KeyError, TypeError):
        pass
    with contextlib.suppress(OSError):
        os.remove(path)
    return None


def touch(entry: str) -> None:
    """Mark ``entry``'s model as just used (eviction removes the least recently used)."""
    try:
        os.utime(os.path.dirname(entry))
    except OSError:
        pass


def max_bytes() -> int:
    """The cache's size limit: ``$NANO_CACHE_MAX_GB`` GB, else DEFAULT_MAX_GB."""
    value = os.environ.get("NANO_CACHE_MAX_GB", "")
    try:
        gigabytes = float(value) if value else DEFAULT_MAX_GB
    except ValueError:
        gigabytes = DEFAULT_MAX_GB
    return int(gigabytes * 1e9)


def evict(root: str, limit: int, keep: Optional[str] = None) -> list:
    """Remove whole models' entries, least recently used first, until ``root`` holds at
    most ``limit`` bytes (``keep``, the model being searched, stays); returns what went.
    A search calls it once, as it opens the cache (walking the cache on every store would
    read it again for each candidate), so the cache can pass the limit by one model's
    entries until the next search."""
    models = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
                       for f in files)
            models.append((os.path.getmtime(path), path, size))
    total = sum(size for _, _, size in models)
    removed = []
    for _, path, size in sorted(models):
        if total <= limit:
            break
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            removed.append(path)
    return removed


def _remove_abandoned_copies(key_dir: str) -> None:
    """Remove the half-made copies of processes that died while storing (interrupted
    between copytree and the rename)."""
    for name in os.listdir(key_dir):
        if not name.endswith(PARTIAL):
            continue
        pid = name[:-len(PARTIAL)].rsplit(".", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            path = os.path.join(key_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:  # a failure note being written
                with contextlib.suppress(OSError):
                    os.remove(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
