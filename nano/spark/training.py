"""Run a ``Trainer`` / ``@nano`` training function in Spark tasks with Spark's ``TorchDistributor``.

TorchDistributor starts ``num_processes`` barrier tasks, each running ``torchrun``; inside
them Nano's ``Trainer`` and ``TorchNano`` see a torchrun rank and join the job as one DDP
rank each, as under ``bigdl-nano-run``. Each rank first takes its own cores (see
:mod:`nano.spark.worker`). As with ``Trainer(num_processes=N)``, rank 0's return value
comes back, and the modules passed as arguments end with rank 0's trained weights.
"""

from __future__ import annotations

from typing import Any, Callable

from nano.errors import NanoValueError
from nano.spark.session import require_pyspark, spark_session
from nano.spark.worker import settle_worker


def _settled(fn: Callable, cpus_per_task: int) -> Callable:
    def rank_main(*args: Any, **kwargs: Any) -> Any:
        import os

        from nano.trainer.arguments import module_states

        # torchrun gives every Spark task LOCAL_WORLD_SIZE 1; the cores taken here are this
        # rank's, and Nano's rank placement keeps them (NANO_INSTANCE_CPUS)
        settle_worker(cpus_per_task)
        os.environ["OMP_NUM_THREADS"] = str(cpus_per_task)
        value = fn(*args, **kwargs)
        return (value, module_states(args, kwargs)) if os.environ.get("RANK") == "0" else None
    return rank_main


def run_training(fn: Callable, *args: Any, num_processes: int = 2, local_mode: bool = False,
                 **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in ``num_processes`` Spark tasks as a torch.distributed job;
    returns rank 0's result (e.g. the trained state dict).

    ``local_mode=False`` (default) runs the ranks as Spark tasks, on the executors of a
    cluster; ``True`` runs them as processes on the driver (TorchDistributor's meaning).
    """
    require_pyspark()
    if not isinstance(num_processes, int) or isinstance(num_processes, bool) or num_processes < 1:
        raise NanoValueError(f"num_processes must be a positive int, got {num_processes!r}")
    if not callable(fn):
        raise NanoValueError(f"run_training takes a function, got {type(fn).__name__}")
    from pyspark.ml.torch.distributor import TorchDistributor

    session = spark_session()
    cpus = int(session.conf.get("spark.task.cpus") or 1)
    distributor = TorchDistributor(num_processes=num_processes, local_mode=local_mode,
                                   use_gpu=False)
    outcome = distributor.run(_settled(fn, cpus), *args, **kwargs)
    if outcome is None:
        raise NanoValueError("rank 0 of the Spark training job returned nothing")
    from nano.trainer.arguments import load_module_states

    value, states = outcome
    load_module_states(args, kwargs, states)
    return value
