"""``nano.Trainer``: ``lightning.Trainer`` that trains in N pinned processes with bf16 / channels_last.

Change one import (``from nano import Trainer``) and keep the rest of the code.
Built on Lightning's public API only: ``DDPStrategy`` with gloo, a precision
string, and :class:`NanoTrainingCallback`.

Three situations, one class:

* ``num_processes=1`` (default): a normal Lightning run in this process.
* ``num_processes=N > 1``: ``fit``/``validate``/``test`` start N local ranks
  (see :mod:`nano.trainer.local_ranks`), each re-creates this Trainer and runs the
  call; rank 0's return value, ``callback_metrics`` and trained weights come
  back to this process and this model. ``predict`` runs here, on all cores,
  so its outputs keep the data's order.
* inside a rank (started by ``bigdl-nano-run --nnodes``, ``torchrun`` or the
  launcher above): the Trainer joins the job as a DDP rank across all nodes.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy

from nano.trainer.arguments import load_module_states, module_states
from nano.errors import NanoValueError
from nano.runtimes.model import AcceleratedModel
from nano.runtimes.loading import load_model, save_model
from nano.trainer.callbacks import NanoTrainingCallback
from nano.trainer.compiled_module import CompiledModule, compiled_for
from nano.trainer.local_ranks import run_distributed
from nano.trainer.placement import bigdl_strategy, place


@dataclass
class _Outcome:
    value: Any
    states: list
    callback_metrics: dict


def _cpu_metrics(metrics: dict) -> dict:
    return {k: (v.detach().cpu() if hasattr(v, "detach") else v) for k, v in metrics.items()}


def _run_as_rank(trainer_cls, init_kwargs: dict, method: str, model, args: tuple, kwargs: dict):
    """Worker side: build the Trainer as a DDP rank, run ``method``, give rank 0's outcome back."""
    trainer = trainer_cls(**init_kwargs)
    value = getattr(trainer, method)(model, *args, **kwargs)
    if trainer.global_rank != 0:
        return None
    return _Outcome(value, module_states((model,) + args, kwargs),
                    _cpu_metrics(trainer.callback_metrics))


def as_lightning_module(model: AcceleratedModel) -> pl.LightningModule:
    """The LightningModule ``model`` was built from, with ``self(...)`` in its steps calling
    ``model`` (BigDL-Nano's ``trainer.validate(InferenceOptimizer.trace(lit, ...))``). Steps
    that call a submodule directly (``self.net(x)``) run that submodule, not ``model``. The
    user's module is not changed: this is a shallow copy. A model traced from a plain module
    that ``Trainer.compile`` wrapped is run in that LightningModule (its loss, metrics)."""
    original = model.original
    if not isinstance(original, pl.LightningModule):
        # a plain module that Trainer.compile wrapped: its loss and metrics judge the model
        original = compiled_for(original) or original
    if not isinstance(original, pl.LightningModule):
        raise NanoValueError(
            f"Trainer.validate/test/predict need a LightningModule, and this accelerated "
            f"model was built from a {type(original).__name__ if original is not None else 'module it no longer has (loaded without model=)'}: "
            f"trace the LightningModule itself (Trainer.compile(model, loss) makes one), or "
            f"pass model= to InferenceOptimizer.load")
    view = copy.copy(original)
    # an instance attribute, not a submodule: the copy shares the original's module dicts
    object.__setattr__(view, "forward", lambda *args, **kwargs: model(*args, **kwargs))
    return view


class Trainer(pl.Trainer):
    """``lightning.Trainer`` plus ``num_processes``, bf16, channels_last, IPEX and lr scaling.

    ``precision``: 32 or "bf16" (bf16 autocast; emulated, with a warning, on CPUs
    without native bf16). ``cpu_for_each_process``: explicit CPU ids per process
    (default: the launcher splits the physical cores evenly). ``auto_lr``: True,
    False or :class:`nano.trainer.AutoLR` (see :mod:`nano.trainer.auto_lr`).
    ``distributed_backend``: "subprocess" (no ``__main__`` guard needed) or
    "spawn"; BigDL-Nano's ``strategy="subprocess"/"spawn"/"ddp"`` names them too. Every
    other keyword goes to ``lightning.Trainer``.
    """

    def __init__(self, num_processes: int = 1, precision=32, channels_last: bool = False,
                 use_ipex: bool = False, cpu_for_each_process=None, auto_lr=True,
                 distributed_backend: str = "subprocess", **kwargs):
        distributed_backend = bigdl_strategy(kwargs, distributed_backend)
        placement = place("nano.Trainer", kwargs, refuse_always=False,
                          num_processes=num_processes, precision=precision,
                          channels_last=channels_last, use_ipex=use_ipex,
                          cpu_for_each_process=cpu_for_each_process, auto_lr=auto_lr,
                          distributed_backend=distributed_backend)
        options = placement.options
        self._nano_options = options
        self._nano_launches = placement.launches
        self._nano_init = dict(kwargs, num_processes=num_processes, precision=options.precision,
                               channels_last=channels_last, use_ipex=use_ipex,
                               cpu_for_each_process=cpu_for_each_process, auto_lr=auto_lr,
                               distributed_backend=distributed_backend)
        self._nano_remote_metrics: Optional[dict] = None
        self._nano_last_model = None
        callbacks = kwargs.pop("callbacks", None) or []
        callbacks = [callbacks] if isinstance(callbacks, pl.Callback) else list(callbacks)
        callbacks.append(NanoTrainingCallback(options))
        if placement.rank is not None or placement.launches:
            kwargs.update(placement.device_kwargs())
        if placement.distributed:
            kwargs["strategy"] = DDPStrategy(process_group_backend="gloo")
        kwargs["precision"] = options.precision  # a Lightning precision string
        super().__init__(callbacks=callbacks, **kwargs)

    @property
    def callback_metrics(self) -> dict:
        """Metrics of the last run; for a multi-process run, those rank 0 reported."""
        if self._nano_remote_metrics is not None:
            return self._nano_remote_metrics
        return super().callback_metrics

    def _launch(self, method: str, model, args: tuple, kwargs: dict):
        if model is None:
            model = self._nano_last_model
        if model is None:
            raise ValueError(f"Trainer.{method}() with num_processes > 1 needs the model "
                             f"(there is no fitted model to reuse yet)")
        job = functools.partial(_run_as_rank, type(self), self._nano_init, method, model, args,
                                kwargs)
        outcome = run_distributed(job, self._nano_options)
        load_module_states((model,) + args, kwargs, outcome.states)
        self._nano_remote_metrics = outcome.callback_metrics
        self._nano_last_model = model
        return outcome.value

    def fit(self, model: Any, *args: Any, **kwargs: Any) -> None:
        """``lightning.Trainer.fit``; with num_processes > 1, in that many pinned processes."""
        if self._nano_launches:
            return self._launch("fit", model, args, kwargs)
        return super().fit(model, *args, **kwargs)

    def validate(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        """``lightning.Trainer.validate``; with num_processes > 1, in that many pinned
        processes. An accelerated model from InferenceOptimizer (built from a
        LightningModule) is validated in this process: see :func:`as_lightning_module`."""
        if isinstance(model, AcceleratedModel):
            return super().validate(as_lightning_module(model), *args, **kwargs)
        if self._nano_launches:
            return self._launch("validate", model, args, kwargs)
        return super().validate(model, *args, **kwargs)

    def test(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        """``lightning.Trainer.test``; with num_processes > 1, in that many pinned processes
        (an accelerated model: in this process, as for validate)."""
        if isinstance(model, AcceleratedModel):
            return super().test(as_lightning_module(model), *args, **kwargs)
        if self._nano_launches:
            return self._launch("test", model, args, kwargs)
        return super().test(model, *args, **kwargs)

    @staticmethod
    def compile(model: torch.nn.Module, loss: Optional[torch.nn.Module] = None,
                optimizer: Optional[torch.optim.Optimizer] = None, scheduler: Any = None,
                metrics: Optional[Sequence[Any]] = None) -> pl.LightningModule:
        """BigDL-Nano's form: a LightningModule made of a plain ``model`` (batches are
        ``(*inputs, target)``), its ``loss``, ``optimizer``, lr ``scheduler`` and torchmetrics
        ``metrics``, ready for ``fit``/``validate``/``test``/``predict``. A LightningModule
        is returned as it is."""
        if isinstance(model, pl.LightningModule):
            return model
        return CompiledModule(model, loss, optimizer, scheduler, metrics)

    @staticmethod
    def save(model: torch.nn.Module, path: str) -> None:
        """Save ``model`` (a Nano model from InferenceOptimizer, or any module, saved as its
        state dict) to directory ``path``; the same as ``InferenceOptimizer.save``."""
        save_model(model, path)

    @staticmethod
    def load(path: str, model: Optional[torch.nn.Module] = None) -> torch.nn.Module:
        """Load what :meth:`save` wrote; ``model`` (the original module) is needed for a
        state dict, and gets the loaded weights in place (BigDL-Nano's form)."""
        loaded = load_model(path, model)
        if model is not None and loaded.needs_model_to_load:
            model.load_state_dict(loaded.source_state())
            return model
        return loaded

    def predict(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        """``lightning.Trainer.predict``, always in this process so predictions keep data order."""
        if self._nano_launches and model is None:
            model = self._nano_last_model
        if isinstance(model, AcceleratedModel):
            model = as_lightning_module(model)
        self._nano_remote_metrics = None
        return super().predict(model, *args, **kwargs)
