"""``InferenceOptimizer``: trace, save/load, and optimize() that picks the fastest runtime."""

from __future__ import annotations

import contextlib
from typing import Optional, Union

import torch

from nano.inference import backends
from nano.inference.methods import Method, normalize_accelerator
from nano.inference.model import AcceleratedModel, load_model
from nano.inference.prepare import prepare


def build_method(model: torch.nn.Module, method: Method, input_sample,
                 thread_num: Optional[int] = None,
                 dynamic_axes: Union[bool, dict] = True) -> AcceleratedModel:
    """Build one method in this process (no isolation)."""
    return backends.build(method, prepare(model, input_sample, thread_num, dynamic_axes))


class InferenceOptimizer:
    """Find, build, save and load the fastest equivalent of a PyTorch model on this CPU.

    The static methods (``trace``, ``quantize``, ``save``, ``load``) build one
    model in this process; an instance's ``optimize()`` tries every method
    isolated in child processes and ``summary()`` / ``get_best_model()`` report
    and pick from the results.
    """

    def __init__(self):
        self._search = None  # set by optimize()

    @staticmethod
    def trace(model: torch.nn.Module, accelerator: Optional[str] = None, input_sample=None,
              use_ipex: bool = False, channels_last: bool = False,
              thread_num: Optional[int] = None, dynamic_axes: Union[bool, dict] = True,
              **unknown) -> AcceleratedModel:
        """Return ``model`` running on ``accelerator`` (None: plain PyTorch, "jit", "compile",
        "onnxruntime", "openvino") at fp32.

        ``input_sample`` is one example input: a tensor, a tuple of positional
        inputs or a dict of keyword inputs. ``dynamic_axes=True`` lets dim 0
        (the batch) vary, False fixes every shape, and ``{name: [axes]}``
        chooses per input. The user's model is not modified.
        """
        if unknown:
            raise TypeError(f"trace() got unknown option(s) {', '.join(sorted(unknown))}; valid: "
                            "accelerator, input_sample, use_ipex, channels_last, thread_num, "
                            "dynamic_axes")
        acc = normalize_accelerator(accelerator)
        if use_ipex and acc not in ("pytorch", "jit"):
            raise ValueError(f"use_ipex works with accelerator None or 'jit', not {accelerator!r}")
        if channels_last and acc not in ("pytorch", "jit", "compile"):
            raise ValueError(f"channels_last applies to the torch accelerators (None, 'jit', "
                             f"'compile'); {acc} picks its own memory layout")
        method = Method(acc, "fp32", channels_last, use_ipex)
        return build_method(model, method, input_sample, thread_num, dynamic_axes)

    @staticmethod
    def save(model: AcceleratedModel, path: str) -> None:
        """Save an accelerated model to directory ``path`` (metadata + standard artifacts).

        A plain ``nn.Module`` is saved as an ``original`` model (its state dict).
        """
        if not isinstance(model, AcceleratedModel):
            if not isinstance(model, torch.nn.Module):
                raise TypeError(f"save() takes a model returned by Nano or an nn.Module, got "
                                f"{type(model).__name__}")
            raise TypeError("save() needs a model built by Nano (trace, quantize or "
                            "get_best_model); for a plain module use torch.save(state_dict)")
        model.save(path)

    @staticmethod
    def load(path: str, model: Optional[torch.nn.Module] = None) -> AcceleratedModel:
        """Load a directory written by ``save``. ``model`` (the original module) is needed only
        for kinds saved as state dicts (plain PyTorch, compile, IPEX); the error says so."""
        return load_model(path, model)

    @staticmethod
    def get_context(model=None, *more):
        """A no-op context kept for BigDL-Nano compatibility: Nano models apply their own
        threads and autocast inside each call."""
        return contextlib.nullcontext()
