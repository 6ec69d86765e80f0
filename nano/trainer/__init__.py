"""Training on CPUs: ``Trainer`` for Lightning, ``TorchNano`` / ``@nano`` for plain PyTorch loops.

All three share :mod:`nano.trainer.training_options` (validation), :mod:`nano.trainer.local_ranks`
(N pinned local processes), :mod:`nano.trainer.distributed` (torchrun-style
ranks, incl. multi-node) and :mod:`nano.trainer.auto_lr` (lr scaling).

Imports ``nano.runtimes`` (saving and loading models) and below, not the search or
multi-process inference beside it; imported by ``nano`` and the patches on top.
"""

from nano.trainer.auto_lr import AutoLR, LRScaling, lr_scaling
from nano.trainer.local_ranks import WorkerError
from nano.trainer.lightning_trainer import Trainer
from nano.trainer.torch_nano import TorchNano, nano

__all__ = ["AutoLR", "LRScaling", "lr_scaling", "TorchNano", "Trainer", "WorkerError", "nano"]
