"""Where a ``Trainer`` / ``TorchNano`` being built stands: plain caller, launcher of N ranks, or a rank.

Both classes start with :func:`place`: validate the options, detect a
torchrun-style rank, refuse placement keywords Nano decides itself, and pin a
rank to its cores.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from nano.trainer.distributed import RankInfo, current_rank, settle_rank
from nano.trainer.training_options import TrainingOptions, training_options

PLACEMENT_KWARGS = ("accelerator", "strategy", "devices", "num_nodes")
# BigDL-Nano's strategy= names -> the distributed_backend that starts the same processes
BIGDL_STRATEGIES = {"subprocess": "subprocess", "spawn": "spawn", "ddp": "subprocess",
                    "ddp_spawn": "spawn"}


def bigdl_strategy(kwargs: dict, distributed_backend: str) -> str:
    """Take a BigDL-Nano ``strategy=`` name out of ``kwargs`` and return the
    distributed_backend it stands for (else ``distributed_backend``); any other strategy
    stays in ``kwargs`` for :func:`place` to judge."""
    strategy = kwargs.get("strategy")
    if not isinstance(strategy, str) or strategy not in BIGDL_STRATEGIES:
        return distributed_backend
    del kwargs["strategy"]
    return BIGDL_STRATEGIES[strategy]


@dataclass(frozen=True)
class Placement:
    """The validated options, and this process's rank when it is one."""

    options: TrainingOptions
    rank: Optional[RankInfo]

    @property
    def launches(self) -> bool:
        """True in the caller of a multi-process run: calls start the ranks instead of training."""
        return self.rank is None and self.options.num_processes > 1

    @property
    def distributed(self) -> bool:
        return self.rank is not None and self.rank.world_size > 1

    def device_kwargs(self) -> dict:
        """accelerator/devices/num_nodes for the Lightning or Fabric constructor."""
        if self.rank is None:
            return {"accelerator": "cpu", "devices": 1}
        return {"accelerator": "cpu", "devices": self.rank.local_world_size,
                "num_nodes": self.rank.num_nodes}


def place(owner: str, user_kwargs: Mapping, refuse_always: bool, stacklevel: int = 3,
          **options: Any) -> Placement:
    """Validate ``options`` (those of :func:`training_options`) and settle this process.

    Placement keywords (``devices``, ``strategy``, ...) in ``user_kwargs`` are
    refused when Nano places the processes (always, if ``refuse_always``).
    """
    rank = current_rank()
    placement = Placement(training_options(**options, place=rank is None), rank)
    given = [k for k in PLACEMENT_KWARGS if k in user_kwargs]
    if given and (refuse_always or rank is not None or placement.launches):
        raise ValueError(f"{owner} places the processes itself; drop {given} and use "
                         f"num_processes / cpu_for_each_process instead")
    if rank is not None:
        # one rank per node (Spark's TorchDistributor) asks for the whole job's size
        if placement.options.num_processes not in (1, rank.local_world_size, rank.world_size):
            warnings.warn(f"num_processes={placement.options.num_processes} is ignored: this "
                          f"process is one of {rank.local_world_size} local ranks started by the "
                          f"launcher", stacklevel=stacklevel)
        settle_rank(rank)
    return placement
