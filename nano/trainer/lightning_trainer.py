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

import functools
from dataclasses import dataclass
from typing import Any, Optional

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy

from nano.trainer.arguments import load_module_states, module_states
from nano.trainer.callbacks import NanoTrainingCallback
from nano.trainer.local_ranks import run_distributed
from nano.trainer.placement import place


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


class Trainer(pl.Trainer):
    """``lightning.Trainer`` plus ``num_processes``, bf16, channels_last, IPEX and lr scaling.

    ``precision``: 32 or "bf16" (bf16 autocast; falls back to fp32 with a warning
    on CPUs without bf16). ``cpu_for_each_process``: explicit CPU ids per process
    (default: the launcher splits the physical cores evenly). ``auto_lr``: True,
    False or :class:`nano.trainer.AutoLR` (see :mod:`nano.trainer.auto_lr`).
    ``distributed_backend``: "subprocess" (no ``__main__`` guard needed) or
    "spawn". Every other keyword goes to ``lightning.Trainer``.
    """

    def __init__(self, num_processes: int = 1, precision=32, channels_last: bool = False,
                 use_ipex: bool = False, cpu_for_each_process=None, auto_lr=True,
                 distributed_backend: str = "subprocess", **kwargs):
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
        """``lightning.Trainer.validate``; with num_processes > 1, in that many pinned processes."""
        if self._nano_launches:
            return self._launch("validate", model, args, kwargs)
        return super().validate(model, *args, **kwargs)

    def test(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        """``lightning.Trainer.test``; with num_processes > 1, in that many pinned processes."""
        if self._nano_launches:
            return self._launch("test", model, args, kwargs)
        return super().test(model, *args, **kwargs)

    def predict(self, model: Any = None, *args: Any, **kwargs: Any) -> Any:
        """``lightning.Trainer.predict``, always in this process so predictions keep data order."""
        if self._nano_launches and model is None:
            model = self._nano_last_model
        self._nano_remote_metrics = None
        return super().predict(model, *args, **kwargs)
