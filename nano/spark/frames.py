"""The first rows of a Spark DataFrame as tensors: data for ``optimize()`` on the driver."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np
import torch

from nano.errors import DataMismatch, NanoValueError
from nano.spark.columns import ModelInput, check_columns, parse_input_shapes

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

DEFAULT_ROWS = 256


def sample(df: "DataFrame", columns: Optional[Sequence[str]] = None,
           input_shapes: Optional[Sequence] = None, label: Optional[str] = None, rows: int = DEFAULT_ROWS,
           batch_size: int = 32) -> torch.utils.data.DataLoader:
    """The first ``rows`` rows of ``df`` (read on the driver) as a DataLoader of
    ``(inputs..., label)`` batches, for ``optimize(training_data=...)``.

    ``columns`` are the model's inputs in order (default: every column but ``label``);
    array columns are reshaped to ``input_shapes`` (default: kept flat). Integer columns
    become int64 tensors, the rest float32.
    """
    from pyspark.sql.types import ArrayType, IntegralType

    for name, value in (("rows", rows), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise NanoValueError(f"{name} must be a positive int, got {value!r}")
    columns = list(columns) if columns is not None else [c for c in df.columns if c != label]
    if label is not None and label not in df.columns:
        raise DataMismatch(f"no label column {label!r}; the DataFrame has {sorted(df.columns)}")
    kinds = {f.name: f.dataType for f in df.schema.fields}
    shapes = parse_input_shapes(input_shapes, len(columns))
    sizes: Optional[dict] = None  # read once here when the shapes come from the first row
    if shapes is None:  # flat arrays, or one number per row
        arrays = [c for c in columns if c in kinds and isinstance(kinds[c], ArrayType)]
        head = df.select(*arrays).head() if arrays else ()
        if head is None:
            raise DataMismatch("the DataFrame has no rows to sample")
        sizes = {c: len(v) for c, v in zip(arrays, head)}
        shapes = [(sizes[c],) if c in sizes else () for c in columns]

    def dtype(c: str) -> torch.dtype:
        kind: Any = kinds[c]
        kind = kind.elementType if isinstance(kind, ArrayType) else kind
        return torch.int64 if isinstance(kind, IntegralType) else torch.float32

    check_columns(df, columns, [ModelInput(s, dtype(c) if c in kinds else torch.float32)
                                for c, s in zip(columns, shapes)], sizes)
    wanted = columns + ([label] if label is not None else [])
    frame: Any = df.select(*wanted).limit(rows).toPandas()
    if frame.empty:
        raise DataMismatch("the DataFrame has no rows to sample")
    tensors = []
    for c, shape in zip(wanted, shapes + [()]):
        values = np.stack(frame[c].to_numpy()) if shape else frame[c].to_numpy()
        tensors.append(torch.from_numpy(np.ascontiguousarray(values)).to(dtype(c))
                       .reshape(len(frame), *shape))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors),
                                       batch_size=batch_size)
