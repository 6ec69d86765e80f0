"""The Spark session Nano runs in: the user's, or a ``local[N]`` one with tuned Python workers."""

from __future__ import annotations

import atexit
import importlib
import logging
import os
from typing import TYPE_CHECKING, Any, Mapping, Optional

from nano.errors import NanoError
from nano.launcher.environment import apply_plan, plan_environment
from nano.launcher.topology import read_topology

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

# Spark's default task retries on a cluster; ``local[N]`` alone would fail a job on the
# first lost task, so Nano's local session retries as a cluster does.
LOCAL_MAX_FAILURES = 4
# Binding is done per worker by nano.spark.worker (each worker takes its own cores); a
# process-wide OMP_PROC_BIND would bind every worker's threads to the same first cores.
_PER_WORKER = ("OMP_PROC_BIND", "OMP_PLACES", "KMP_AFFINITY", "GOMP_CPU_AFFINITY",
               "NANO_SAVED_ENV")


class SparkUnavailable(NanoError, ImportError):
    """PySpark (or Java) is not installed."""


def require_pyspark() -> None:
    """Raise one line saying how to install the extra when PySpark is missing."""
    for module in ("pyspark", "pandas", "pyarrow"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise SparkUnavailable(f"nano.spark needs PySpark, pandas and pyarrow ({module} is "
                                   f"missing): pip install -e \".[spark]\"") from None


def worker_conf(task_cpus: int = 1, env: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Spark settings that give Python workers ``bigdl-nano-init``'s tuning for ``task_cpus`` cores.

    The allocator (LD_PRELOAD) and OpenMP thread count go to every Python worker through
    ``spark.executorEnv.*``; pass these to your own session's builder on a cluster.
    """
    env = dict(os.environ if env is None else env)
    plan = plan_environment(read_topology(), env, threads=task_cpus)
    tuned = apply_plan(plan, {})
    conf = {f"spark.executorEnv.{k}": v for k, v in tuned.items() if k not in _PER_WORKER}
    conf["spark.executorEnv.OMP_NUM_THREADS"] = str(task_cpus)
    conf["spark.task.cpus"] = str(task_cpus)
    conf["spark.python.worker.reuse"] = "true"  # the model stays loaded across tasks
    return conf


def _local_master(cores: int) -> str:
    return f"local[{cores},{LOCAL_MAX_FAILURES}]"


def spark_session(**conf: Any) -> "SparkSession":
    """The active Spark session unchanged, or a new ``local[N]`` one (N = usable cores).

    The local session's Python workers get :func:`worker_conf`'s tuning, Arrow transfers
    and task retries; it is stopped when this process exits. ``conf`` adds settings to a
    new session only.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    cores = len(read_topology().usable_cores())
    builder = (SparkSession.builder.master(_local_master(cores)).appName("nano")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.sql.shuffle.partitions", str(max(2, cores))))
    for key, value in {**worker_conf(1), **{k: str(v) for k, v in conf.items()}}.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as e:  # the JVM did not start: say what is missing, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SparkUnavailable(f"could not start a local Spark session ({first}); Spark "
                               f"needs Java 17 (Debian: apt-get install "
                               f"openjdk-17-jre-headless)") from None
    session.sparkContext.setLogLevel("ERROR")  # Spark's own INFO/WARN lines drown the output
    logger.info("started Spark %s session %s", session.version, _local_master(cores))
    atexit.register(session.stop)
    return session
