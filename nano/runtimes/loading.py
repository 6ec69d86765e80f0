"""``save()`` and ``load()`` of any Nano model: the registry finds the class that reads it.

This sits above the registry, so the model classes never import the list of backends:
``load_model`` reads and verifies the directory (``model_files``), asks the registry which
backend's class wrote it, and lets that class rebuild the model.
"""

from __future__ import annotations

from typing import Optional

import torch

from nano.errors import NanoError, NanoTypeError
from nano.runtimes.int8_overflow import warn_on_load
from nano.runtimes.methods import Method
from nano.runtimes.model import AcceleratedModel, check_thread_num
from nano.runtimes.model_files import META_FILE, ModelLoadError, read_metadata, reading
from nano.runtimes.registry import backend_class, build_without_sample


def save_model(model: torch.nn.Module, path: str, compression: Optional[str] = None) -> None:
    """Save a Nano model, or a plain ``nn.Module`` as an ``original`` model (its state dict),
    to directory ``path``."""
    if not isinstance(model, AcceleratedModel):
        if not isinstance(model, torch.nn.Module):
            raise NanoTypeError(f"save() takes a model returned by Nano or an nn.Module, got "
                                f"{type(model).__name__}")
        model = build_without_sample(Method("pytorch"), model, None)
    model.save(path, compression)


def load_model(directory: str, model: Optional[torch.nn.Module] = None,
               thread_num: Optional[int] = None) -> AcceleratedModel:
    """Load a directory written by ``AcceleratedModel.save``; ``thread_num`` overrides the
    saved thread count (e.g. for a worker pinned to fewer cores)."""
    check_thread_num(thread_num)
    with reading(directory):
        return _load_unlocked(directory, model, thread_num)


def _load_unlocked(directory: str, model: Optional[torch.nn.Module],
                   thread_num: Optional[int]) -> AcceleratedModel:
    meta = read_metadata(directory)
    if thread_num is not None:
        meta["thread_num"] = thread_num
    cls = backend_class(Method.from_json(meta["method"]))
    if meta.get("needs_model") and model is None:
        raise ModelLoadError(
            f"{directory!r} holds a state dict (method {meta['method_name']}): pass the original "
            f"module to rebuild it, e.g. InferenceOptimizer.load(path, model=MyModel())")
    if model is not None and not isinstance(model, torch.nn.Module):
        raise NanoTypeError(f"model must be the original torch.nn.Module, got "
                            f"{type(model).__name__}")
    _check_artifact(directory, meta, cls)
    try:
        loaded = cls.load_artifacts(directory, meta, model)
    except (NanoError, ImportError):
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelLoadError(f"{directory!r}: its {cls.accelerator} files (method "
                             f"{meta['method_name']}) did not load: {type(e).__name__}: "
                             f"{first}") from e
    loaded.output_tensors = meta.get("output_tensors", True)
    loaded.built_on = meta.get("built_on") or {}
    loaded.int8_scheme = meta.get("int8_scheme")
    loaded.record_shapes(meta.get("traced_shapes") or [], meta.get("dynamic_dims") or [])
    loaded.record_index_bounds(meta.get("index_bounds") or {})
    warn_on_load(meta, directory)
    return loaded.attach_original(model)


def _check_artifact(directory: str, meta: dict, cls) -> None:
    """The metadata and the files must describe the same kind of model."""
    named = meta.get("accelerator")
    holds = ", ".join(sorted(meta["files"])) or "no files"
    if named != cls.accelerator:
        raise ModelLoadError(f"{directory!r}: {META_FILE} names accelerator {named!r} but method "
                             f"{meta['method_name']!r}, which is {cls.accelerator!r}; the "
                             f"directory holds {holds}")
    if cls.artifact and cls.artifact not in meta["files"]:
        raise ModelLoadError(f"{directory!r}: {META_FILE} names accelerator {named!r} (method "
                             f"{meta['method_name']}), which loads {cls.artifact}, but the "
                             f"directory holds {holds}")


