"""What the model takes and returns, in Spark's types; checks of DataFrame columns against it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import torch

from nano.errors import DataMismatch, NanoTypeError, NanoValueError
from nano.runtimes.structure import leaf_names, flatten_output, output_spec

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType


@dataclass(frozen=True)
class ModelInput:
    """One tensor input: its shape per row (``()`` for a scalar column) and dtype."""

    shape: tuple
    dtype: torch.dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModelOutput:
    """One tensor output: its column name, values per row, and whether it is floating."""

    name: str
    size: int
    scalar: bool
    floating: bool


def parse_input_shapes(input_shapes: Any, count: Optional[int]) -> Optional[list[tuple]]:
    """``input_shapes`` validated: one list of positive ints per input (batch dim excluded)."""
    if input_shapes is None:
        return None
    if not isinstance(input_shapes, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) and all(isinstance(d, int) and not isinstance(d, bool)
                                                 and d > 0 for d in s) for s in input_shapes):
        raise NanoValueError(f"input_shapes must be one list of positive ints per input (the "
                             f"shape of one row, e.g. [[3, 32, 32]]), got {input_shapes!r}")
    if count is not None and len(input_shapes) != count:
        raise DataMismatch(f"input_shapes gives {len(input_shapes)} shape(s), but the model "
                           f"takes {count} input(s)")
    return [tuple(s) for s in input_shapes]


def describe_outputs(value: Any) -> list[ModelOutput]:
    """The output columns of a model output (one batch): a tensor, or tensors nested in
    tuples, lists and dicts (named by their keys or positions)."""
    tensors = flatten_output(value)
    if not tensors:
        raise NanoTypeError(f"the model returned no tensor ({type(value).__name__})")
    names = [n.lstrip("_") or "output" for n in leaf_names(output_spec(value), "")]
    if len(tensors) == 1:
        names = ["prediction"]
    outputs = []
    for name, t in zip(names, tensors):
        if t.dim() == 0:
            raise NanoValueError(f"output {name!r} is a scalar for the whole batch; a column "
                                 f"needs one value per row")
        outputs.append(ModelOutput(name, math.prod(t.shape[1:]), t.dim() == 1,
                                   t.is_floating_point() or t.is_complex()))
    return outputs


def return_type(outputs: Sequence[ModelOutput]) -> "DataType":
    """Spark's type for the outputs: a float/long (array) column, or a struct of them."""
    from pyspark.sql.types import ArrayType, FloatType, LongType, StructField, StructType

    def one(o: ModelOutput) -> "DataType":
        element = FloatType() if o.floating else LongType()
        return element if o.scalar else ArrayType(element, containsNull=False)

    if len(outputs) == 1:
        return one(outputs[0])
    return StructType([StructField(o.name, one(o)) for o in outputs])


def _numeric(data_type: "DataType") -> bool:
    from pyspark.sql.types import NumericType
    return isinstance(data_type, NumericType)


def check_columns(df: "DataFrame", columns: Sequence[str], inputs: Sequence[ModelInput],
                  sizes: Optional[Mapping[str, int]] = None) -> None:
    """Refuse, in one line and before any job, columns that do not fit the model's inputs.

    Reads the first row's array sizes (a one-row job) to check them against the shapes,
    unless ``sizes`` (column -> values per row) already holds them."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType

    if len(columns) != len(inputs):
        raise DataMismatch(f"the model takes {len(inputs)} input(s), but {len(columns)} "
                           f"column(s) were given: {list(columns)}")
    fields = {f.name: f.dataType for f in df.schema.fields}
    sized = []
    for name, spec in zip(columns, inputs):
        if not isinstance(name, str):
            raise NanoTypeError(f"columns are named by strings, got {type(name).__name__}")
        if name not in fields:
            raise DataMismatch(f"no column {name!r}; the DataFrame has {sorted(fields)}")
        kind = fields[name]
        if isinstance(kind, ArrayType) and _numeric(kind.elementType):
            if not spec.shape:
                raise DataMismatch(f"column {name!r} holds arrays, but the model's input "
                                   f"takes one value per row: give its shape in input_shapes")
            sized.append((name, spec))
        elif _numeric(kind):
            if spec.shape:
                raise DataMismatch(f"column {name!r} holds one number per row, but the "
                                   f"model's input has shape {list(spec.shape)} per row")
        else:
            raise DataMismatch(f"column {name!r} is {kind.simpleString()}; the model needs "
                               f"numbers or flat arrays of numbers (flatten nested arrays)")
    if not sized:
        return
    if sizes is None:
        first = df.select(*[F.size(F.col(n)).alias(f"c{i}")
                            for i, (n, _) in enumerate(sized)]).head()
        if first is None:
            return  # no rows: nothing will run
        sizes = {name: n for (name, _), n in zip(sized, first)}
    for name, spec in sized:
        n = sizes[name]
        if n != spec.size:
            raise DataMismatch(f"column {name!r} holds {n} values per row, but the model's "
                               f"input has shape {list(spec.shape)} ({spec.size} values): give "
                               f"each input's shape per row in input_shapes")
