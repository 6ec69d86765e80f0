"""``patch_torch()``: BigDL-Nano's one-line dispatcher. It applies :func:`nano.patch_cuda`
(unless ``cuda_to_cpu=False``) and makes ``lightning.Trainer`` (and
``lightning.pytorch.Trainer``, ``pytorch_lightning.Trainer`` where installed) mean
:class:`nano.Trainer`, so a script that imports Lightning's Trainer afterwards trains
with Nano's. ``unpatch_torch()`` undoes both.
"""

from __future__ import annotations

import importlib
import logging

from nano.cuda_patch import is_patched, patch_cuda, unpatch_cuda

logger = logging.getLogger(__name__)

# modules whose ``Trainer`` attribute patch_torch() replaces
TRAINER_MODULES = ("lightning", "lightning.pytorch", "pytorch_lightning")
_saved: dict = {}  # module name -> its original Trainer
_state = {"cuda": False}


def patch_torch(cuda_to_cpu: bool = True) -> None:
    """Make ``lightning.Trainer`` mean ``nano.Trainer`` and, with ``cuda_to_cpu``, apply
    ``patch_cuda()``. Twice is once."""
    from nano.trainer.lightning_trainer import Trainer

    for name in TRAINER_MODULES:
        if name in _saved:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        _saved[name] = module.Trainer
        setattr(module, "Trainer", Trainer)
    if cuda_to_cpu and not is_patched():  # a patch_cuda() of the user's stays theirs
        patch_cuda()
        _state["cuda"] = True
    logger.info("patch_torch: lightning.Trainer is nano.Trainer")


def unpatch_torch() -> None:
    """Undo patch_torch(): Lightning's own Trainer, and the CUDA patches it applied."""
    for name, original in list(_saved.items()):
        setattr(importlib.import_module(name), "Trainer", original)
        del _saved[name]
    if _state["cuda"]:
        unpatch_cuda()
        _state["cuda"] = False
