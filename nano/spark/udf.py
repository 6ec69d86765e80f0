"""``model_udf``: a Nano model as a Spark column function, on Spark's ``predict_batch_udf``.

    f = model_udf(model, batch_size=64, input_shapes=[[1, 8, 8]])
    df.withColumn("prediction", f("features"))
    predict(df, f, ["features"])        # the same, with every column checked on the driver first

The driver loads the model and runs it on two rows of zeros, so a model that does not load
or does not take the given shapes is one line before any job. Each Python worker loads
the model once (Spark caches it across batches and tasks), takes its own cores and runs
batches of ``batch_size`` rows; rows keep their order and alignment.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch

from nano.errors import DataMismatch, NanoError, NanoValueError
from nano.runtimes.data import ForwardParams
from nano.runtimes.model import AcceleratedModel
from nano.runtimes.structure import flatten_output
from nano.spark.columns import (ModelInput, ModelOutput, check_columns, describe_outputs,
                                parse_input_shapes, return_type)
from nano.spark.session import require_pyspark
from nano.spark.shipping import ShippedModel, ship
from nano.spark.worker import settle_worker

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def _model_inputs(model: torch.nn.Module, shapes: Optional[list],
                  dtypes: Optional[Sequence]) -> list[ModelInput]:
    """Each input's shape per row and dtype: given, else what a Nano model was traced with."""
    signature = getattr(model, "signature", None) if isinstance(model, AcceleratedModel) else None
    traced = getattr(model, "traced_shapes", None) or []
    if shapes is None:
        if signature is not None and len(traced) == len(signature.tensor_names):
            shapes = [tuple(s[1:]) for s in traced]
        else:
            shapes = [()] * (len(dtypes) if dtypes is not None
                             else max(1, ForwardParams.of(model).required))
    if dtypes is None:
        recorded = signature.tensor_dtypes() if signature is not None else []
        dtypes = recorded if len(recorded) == len(shapes) else [torch.float32] * len(shapes)
    if len(dtypes) != len(shapes):
        raise DataMismatch(f"input_dtypes gives {len(dtypes)} dtype(s) for {len(shapes)} input(s)")
    out = []
    for shape, dtype in zip(shapes, dtypes):
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise NanoValueError(f"input_dtypes holds torch dtypes (or their names), got {dtype!r}")
        out.append(ModelInput(tuple(shape), dtype))
    return out


def _zeros(inputs: Sequence[ModelInput], rows: int) -> list[torch.Tensor]:
    return [torch.zeros((rows, *i.shape), dtype=i.dtype) for i in inputs]


def _as_arrays(value: Any, outputs: Sequence[ModelOutput], rows: int):
    """The model's output as predict_batch_udf wants it: one 2-D/1-D array, or a dict."""
    tensors = flatten_output(value)
    if len(tensors) != len(outputs):
        raise NanoValueError(f"the model returned {len(tensors)} tensor(s) for this batch, "
                             f"but {len(outputs)} on the driver's check")
    arrays = {}
    for o, t in zip(outputs, tensors):
        t = t.detach()
        t = t.float() if o.floating else t.long()
        a = t.reshape(rows) if o.scalar else t.reshape(rows, o.size)
        arrays[o.name] = a.numpy()
    return next(iter(arrays.values())) if len(outputs) == 1 else arrays


def _make_predict_fn(shipped: ShippedModel, inputs: list[ModelInput], outputs: list[ModelOutput]):
    """The function each worker calls once: settle the worker, load the model, return predict."""
    def make():
        settle_worker()
        model = shipped.load(thread_num=torch.get_num_threads())  # the task's cores

        def predict(*arrays: np.ndarray):
            rows = len(arrays[0])
            xs = [torch.from_numpy(np.ascontiguousarray(a)).to(i.dtype).reshape(rows, *i.shape)
                  for a, i in zip(arrays, inputs)]
            with torch.no_grad():
                return _as_arrays(model(*xs), outputs, rows)

        # predict_batch_udf counts the parameters to match columns to inputs
        predict.__signature__ = inspect.Signature(
            [inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_ONLY)
             for i in range(len(inputs))])
        return predict
    return make


class ModelUDF:
    """A model as a Spark column function: ``f("col")`` or ``f("input_ids", "attention_mask")``.

    A single output is one column (an array per row, or a number where the model returns
    one value per row); several or nested outputs are a struct column with a field per
    tensor, named by the output's keys (``predict`` spreads them into columns).
    """

    def __init__(self, shipped: ShippedModel, inputs: list[ModelInput],
                 outputs: list[ModelOutput], batch_size: int):
        from pyspark.ml.functions import predict_batch_udf

        self.shipped, self.inputs, self.outputs = shipped, inputs, outputs
        self.batch_size = batch_size
        self.return_type = return_type(outputs)
        shapes = [list(i.shape) if i.shape else None for i in inputs]
        self._udf = predict_batch_udf(_make_predict_fn(shipped, inputs, outputs),
                                      return_type=self.return_type, batch_size=batch_size,
                                      input_tensor_shapes=shapes if any(shapes) else None)

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def __call__(self, *columns: Any) -> "Column":
        if len(columns) != len(self.inputs):
            raise DataMismatch(f"the model takes {len(self.inputs)} input(s), but "
                               f"{len(columns)} column(s) were given")
        return self._udf(*columns)

    def __repr__(self) -> str:
        return (f"ModelUDF({self.shipped.name}, inputs={[list(i.shape) for i in self.inputs]}, "
                f"outputs={self.output_names}, batch_size={self.batch_size})")


def model_udf(model: Any, batch_size: int = 64, input_shapes: Optional[Sequence] = None,
              input_dtypes: Optional[Sequence] = None,
              original: Optional[torch.nn.Module] = None) -> ModelUDF:
    """Turn a Nano model, a directory saved by ``InferenceOptimizer.save``, or an ``nn.Module``
    into a Spark column function (see :class:`ModelUDF`).

    ``input_shapes`` gives each input's shape per row (array columns hold it flattened);
    a Nano model traced on a sample knows its own. ``input_dtypes`` defaults to the traced
    dtypes, else float32. ``original`` is the module a state-dict save needs.
    """
    require_pyspark()
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise NanoValueError(f"batch_size must be a positive int, got {batch_size!r}")
    shipped, local = ship(model, original)
    shapes = parse_input_shapes(input_shapes, len(input_dtypes) if input_dtypes else None)
    inputs = _model_inputs(local, shapes, input_dtypes)
    training = local.training  # the check must not move the user's BatchNorm statistics
    try:
        with torch.no_grad():
            sample = local.eval()(*_zeros(inputs, 2))
    except NanoError as e:
        raise DataMismatch(f"the model does not run on inputs of shape(s) "
                           f"{[list(i.shape) for i in inputs]} per row: {e}") from None
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataMismatch(f"the model does not run on inputs of shape(s) "
                           f"{[list(i.shape) for i in inputs]} per row (give input_shapes / "
                           f"input_dtypes): {type(e).__name__}: {first}") from None
    finally:
        if training:
            local.train(True)
    return ModelUDF(shipped, inputs, describe_outputs(sample), batch_size)


def predict(df: "DataFrame", model: Any, columns: Sequence[str], output: str = "prediction",
            **udf_options: Any) -> "DataFrame":
    """``df`` with the model's outputs added, every column checked on the driver first.

    ``model`` is a :class:`ModelUDF` or anything :func:`model_udf` takes (with
    ``udf_options``). One output becomes column ``output``; several become
    ``{output}_{name}`` columns, one per tensor.
    """
    if isinstance(model, ModelUDF) and udf_options:
        raise NanoValueError(f"{sorted(udf_options)} apply when model_udf builds the function; "
                             f"this ModelUDF was built already")
    f = model if isinstance(model, ModelUDF) else model_udf(model, **udf_options)
    if isinstance(columns, str):
        columns = [columns]
    check_columns(df, list(columns), f.inputs)
    taken = set(df.columns)
    names = [output] if len(f.outputs) == 1 else [f"{output}_{n}" for n in f.output_names]
    clash = [n for n in names if n in taken]
    if clash:
        raise DataMismatch(f"the DataFrame already has column(s) {clash}: choose another output=")
    with_out = df.withColumn(output if len(names) == 1 else f"__{output}", f(*columns))
    if len(names) == 1:
        return with_out
    from pyspark.sql import functions as F
    return with_out.select(*[F.col(c) for c in df.columns],
                           *[F.col(f"__{output}.{n}").alias(m)
                             for n, m in zip(f.output_names, names)])
