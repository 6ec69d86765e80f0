"""Nano on Apache Spark: a Nano model as a column function, and Nano training in Spark tasks.

Needs the ``spark`` extra (``pip install -e ".[spark]"``: PySpark, pandas < 3, pyarrow) and
Java 17. Every call takes the active Spark session, or starts a ``local[N]`` one where
there is none (:func:`spark_session`), so a laptop runs the same code a cluster runs.

* :func:`model_udf` / :func:`predict`: batch inference over DataFrame columns, on Spark's own
  ``predict_batch_udf``.
* :func:`sample`: the first rows of a DataFrame as tensors, e.g. ``optimize()``'s data.
* :func:`run_training`: a ``Trainer`` / ``@nano`` function in Spark tasks, on Spark's own
  ``TorchDistributor``.
"""

from nano.spark.frames import sample
from nano.spark.session import spark_session, worker_conf
from nano.spark.training import run_training
from nano.spark.udf import ModelUDF, model_udf, predict

__all__ = ["ModelUDF", "model_udf", "predict", "run_training", "sample", "spark_session",
           "worker_conf"]
