"""``TorchNano`` and ``@nano``: plain PyTorch training loops in N pinned processes, on Lightning Fabric.

Subclass :class:`TorchNano`, write ``train(...)`` with ``self.setup(model,
optimizer, *loaders)`` and ``self.backward(loss)``, and call ``MyNano(...).train(...)``;
or put ``@nano(...)`` on an existing ``train(model, optimizer, loader, ...)``
function and call it unchanged. With ``num_processes > 1`` the call runs on
every rank (see :mod:`nano.trainer.local_ranks`), rank 0's return value comes back,
and every model passed in the arguments ends up with the trained weights.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, TYPE_CHECKING

from lightning.fabric import Fabric
from lightning.fabric.strategies import DDPStrategy
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from nano.errors import NanoValueError
from nano.trainer.arguments import (find, find_modules, load_module_states, module_states, replace,
                                    state_outside_modules)
from nano.trainer.auto_lr import attach_lr_scaling
from nano.trainer.channels_last import use_channels_last
from nano.trainer.ipex_training import ipex_optimize
from nano.trainer.local_ranks import run_distributed
from nano.trainer.training_options import training_options
from nano.trainer.placement import bigdl_strategy, place
from nano.trainer.precision import CpuBf16Autocast

if TYPE_CHECKING:
    import torch


def _precision_plugins(options) -> list:
    return [CpuBf16Autocast()] if options.bf16 else []


def _run_as_rank(cls, init_args: tuple, init_kwargs: dict, args: tuple, kwargs: dict):
    """Worker side: rebuild the TorchNano as a rank, run ``train``, give rank 0's outcome back."""
    instance = cls(*init_args, **init_kwargs)
    value = instance.train(*args, **kwargs)
    if instance.global_rank != 0:
        return None
    return value, module_states(args, kwargs)


def _launching(train):
    """Wrap a subclass's ``train`` so that, in the caller of a multi-process run, it starts the ranks."""
    @functools.wraps(train)
    def wrapper(self, *args, **kwargs):
        if not self._nano_launches:
            return train(self, *args, **kwargs)
        loose = state_outside_modules(args, kwargs)
        if loose:
            raise NanoValueError(
                f"num_processes={self._nano_options.num_processes}: {loose}; each process "
                f"would train its own copy, unsynchronized, and the result would not come "
                f"back. Put trainable tensors in an nn.Module (as nn.Parameter) passed as an "
                f"argument, or use num_processes=1")
        init_args, init_kwargs = self._nano_args
        job = functools.partial(_run_as_rank, type(self), init_args, init_kwargs, args, kwargs)
        value, states = run_distributed(job, self._nano_options)
        load_module_states(args, kwargs, states)
        return value
    wrapper._nano_launching = True
    return wrapper


class TorchNano(Fabric):
    """A Fabric whose ``train`` runs in ``num_processes`` pinned processes with Nano's options.

    Options are those of :class:`nano.Trainer`; other keywords go to ``Fabric``.
    """

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls)
        instance._nano_args = (args, kwargs)  # to rebuild the same object in each rank
        return instance

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        train = cls.__dict__.get("train")
        if train is not None and not getattr(train, "_nano_launching", False):
            cls.train = _launching(train)

    def __init__(self, num_processes: int = 1, precision=32, channels_last: bool = False,
                 use_ipex: bool = False, cpu_for_each_process=None, auto_lr=True,
                 distributed_backend: str = "subprocess", **fabric_kwargs):
        refused = [k for k in ("precision", "plugins") if k in fabric_kwargs]
        if refused:
            raise ValueError(f"TorchNano sets the precision itself; drop {refused} and use "
                             f"precision=32 or 'bf16'")
        distributed_backend = bigdl_strategy(fabric_kwargs, distributed_backend)
        placement = place("TorchNano", fabric_kwargs, refuse_always=True,
                          num_processes=num_processes, precision=precision,
                          channels_last=channels_last, use_ipex=use_ipex,
                          cpu_for_each_process=cpu_for_each_process, auto_lr=auto_lr,
                          distributed_backend=distributed_backend)
        self._nano_options = placement.options
        self._nano_launches = placement.launches
        self._nano_steps_per_epoch: Optional[int] = None
        strategy = DDPStrategy(process_group_backend="gloo") if placement.distributed else "auto"
        super().__init__(strategy=strategy, plugins=_precision_plugins(placement.options),
                         **placement.device_kwargs(), **fabric_kwargs)
        if placement.distributed:
            self.launch()

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Your training loop; override it. Runs on every rank."""
        raise NotImplementedError("subclass TorchNano and implement train(self, ...)")

    @property
    def num_processes(self) -> int:
        """How many processes train (BigDL-Nano's name; Fabric's is ``world_size``)."""
        return self._nano_options.num_processes

    def setup(  # type: ignore[override]  # BigDL-Nano's setup also takes the loaders
            self, model: torch.nn.Module, *optimizers_and_loaders: Any) -> Any:
        """Prepare ``model``, its optimizers and data loaders: returns ``(model, *rest)``, the
        rest prepared in the order given. Optimizers may come one by one or as a list
        (BigDL-Nano's ``setup(model, [opt1, opt2], loader)``; a list comes back as a list).

        Applies channels_last, IPEX and lr scaling, then Fabric's DDP wrapping,
        bf16 autocast and distributed samplers. A model without trainable parameters
        is moved, not wrapped (DDP refuses it).
        """
        flat = [o for item in optimizers_and_loaders
                for o in (item if _optimizer_list(item) else [item])]
        optimizers = [o for o in flat if isinstance(o, Optimizer)]
        loaders = [d for d in flat if isinstance(d, DataLoader)]
        if len(optimizers) + len(loaders) != len(flat):
            bad = [type(o).__name__ for o in flat if not isinstance(o, (Optimizer, DataLoader))]
            raise TypeError(f"TorchNano.setup(model, *optimizers, *dataloaders) got {bad}")
        prepared: dict = {}
        if loaders:
            ready = self.setup_dataloaders(*loaders)
            for loader, r in zip(loaders, ready if len(loaders) > 1 else [ready]):
                prepared[id(loader)] = r
        options = self._nano_options
        originals = list(optimizers)  # what the caller holds, in the order prepared
        if options.channels_last:
            use_channels_last(model)
        if options.use_ipex:
            model, first = ipex_optimize(model, optimizers[0] if optimizers else None, options.bf16)
            if optimizers:
                optimizers[0] = first
        if options.auto_lr is not None and optimizers:
            config = options.auto_lr.per_epoch(self._nano_steps_per_epoch)
            for opt in optimizers:
                attach_lr_scaling(opt, self.world_size, config)
        if any(p.requires_grad for p in model.parameters()):
            ready_model, *ready_optimizers = _as_list(super().setup(model, *optimizers))
        else:
            ready_model = self.to_device(model)
            ready_optimizers = _as_list(self.setup_optimizers(*optimizers)) if optimizers else []
        for opt, r in zip(originals, ready_optimizers):
            prepared[id(opt)] = r
        rest = [[prepared[id(o)] for o in item] if _optimizer_list(item) else prepared[id(item)]
                for item in optimizers_and_loaders]
        return (ready_model, *rest) if rest else ready_model

    def setup_dataloaders(self, *dataloaders: DataLoader, **kwargs: Any) -> Any:
        """Fabric's, noting the first loader's length (per process) for auto_lr's
        ``warmup_epochs``."""
        ready = super().setup_dataloaders(*dataloaders, **kwargs)
        first = ready[0] if isinstance(ready, (list, tuple)) else ready
        try:
            self._nano_steps_per_epoch = len(first)
        except TypeError:  # an iterable dataset has no length
            pass
        return ready


def _optimizer_list(item: Any) -> bool:
    return isinstance(item, (list, tuple)) and bool(item) \
        and all(isinstance(o, Optimizer) for o in item)


def _as_list(prepared: Any) -> list:
    return list(prepared) if isinstance(prepared, (list, tuple)) else [prepared]


class _FunctionNano(TorchNano):
    """Runs a plain ``train(model, optimizer, loader, ...)`` function with its objects prepared."""

    def train(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        prepared = {}
        # the loaders first: auto_lr's warmup_epochs counts steps from them
        for loader in find(DataLoader, args, kwargs):
            prepared[id(loader)] = self.setup_dataloaders(loader)
        # a module without trainable parameters (a loss such as nn.MSELoss()) is used as is:
        # DDP refuses such a module
        models = [m for m in find_modules(args, kwargs)
                  if any(p.requires_grad for p in m.parameters())]
        optimizers = find(Optimizer, args, kwargs)
        for model in models:
            params = {id(p) for p in model.parameters()}
            own = [o for o in optimizers if id(o) not in prepared
                   and any(id(p) in params for g in o.param_groups for p in g["params"])]
            ready = self.setup(model, *own)
            ready = ready if own else (ready,)
            for original, wrapped in zip([model] + own, ready):
                prepared[id(original)] = wrapped
        leftover = [o for o in optimizers if id(o) not in prepared]
        if leftover:
            wrapped = self.setup_optimizers(*leftover)
            for original, w in zip(leftover, wrapped if len(leftover) > 1 else [wrapped]):
                prepared[id(original)] = w
        args, kwargs = replace(args, kwargs, lambda v: prepared.get(id(v), v))
        return fn(*args, **kwargs)


def nano(num_processes: int = 1, precision: Any = 32, channels_last: bool = False,
         use_ipex: bool = False, cpu_for_each_process: Optional[Sequence[Sequence[int]]] = None,
         auto_lr: Any = True, distributed_backend: str = "subprocess"
         ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate ``train(model, optimizer, loader, ...)`` to run it with Nano's options.

    Models, optimizers and ``DataLoader``s are found among the positional and
    keyword arguments (and in lists/tuples/dicts passed as arguments) and
    wrapped: DDP, bf16 autocast, distributed samplers, channels_last, lr scaling.
    The caller's models end up with the trained weights; the call returns rank
    0's return value. Options are checked when decorating.
    """
    options = dict(num_processes=num_processes, precision=precision, channels_last=channels_last,
                   use_ipex=use_ipex, cpu_for_each_process=cpu_for_each_process, auto_lr=auto_lr,
                   distributed_backend=distributed_backend)
    training_options(**options)

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return _FunctionNano(**options).train(fn, *args, **kwargs)
        return wrapper
    return decorate
