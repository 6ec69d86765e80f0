"""Turn what users pass as data (a DataLoader, a tensor, a tuple, a dict) into model calls.

A batch is matched against ``forward``'s parameters: ``(inputs..., target)``,
``((inputs...), target)``, ``inputs`` alone, or a dict of keyword inputs (with
"label"/"labels"/"target"/"y" as the target). Every call is an ``(args, kwargs)``
pair. Data that does not fit the model is a ``DataMismatch`` naming the data and
showing the shapes given, raised before any long work starts.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Optional

import torch

from nano.errors import DataMismatch, NanoTypeError

TARGET_KEYS = ("labels", "label", "target", "targets", "y")


def is_spark_dataframe(value: object) -> bool:
    """True for a PySpark DataFrame (classic or Connect), without importing PySpark."""
    return any(c.__name__ == "DataFrame" and c.__module__.startswith("pyspark.sql")
               for c in type(value).__mro__)


def as_batches(data: Any, name: str, limit: Optional[int] = None,
               params: Optional["ForwardParams"] = None,
               until: Optional[Callable[[list], bool]] = None) -> list:
    """A list of batches from a DataLoader/iterable of batches, a tensor, or one tuple batch.

    A list of tensors is one batch of inputs, unless ``params`` (what forward takes) says the
    model cannot take that many: then each tensor is a batch (``[x1, ..., x8]`` for a
    one-input model is eight batches). Reading stops at ``limit`` batches, or once
    ``until(batches so far)`` is true."""
    if data is None:
        return []
    if isinstance(data, torch.Tensor):
        return [(data,)]
    if isinstance(data, (tuple, list)) and data and all(_is_structure(d) for d in data):
        list_of_batches = isinstance(data, list) and (
            all(isinstance(d, (tuple, list, dict)) for d in data)
            or (params is not None and _tensor_per_batch(data, params)))
        if not list_of_batches:
            return [tuple(data)]  # one batch
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, Iterable):
        raise NanoTypeError(f"{name} must be a DataLoader, a tensor, a tuple of tensors or a dict "
                            f"of tensors, got {type(data).__name__}")
    batches = []
    for batch in data:
        batches.append(batch if isinstance(batch, (tuple, list, dict)) else (batch,))
        if (limit is not None and len(batches) >= limit) or (until and until(batches)):
            break
    if not batches:
        raise DataMismatch(f"{name} is empty")
    return batches


def _tensor_per_batch(data: list, params: "ForwardParams") -> bool:
    """Whether a list of tensors can only be one batch per tensor: the model takes neither
    that many inputs nor that many plus a target, and the tensors are alike."""
    n = len(data)
    return (n >= 2 and all(isinstance(d, torch.Tensor) for d in data)
            and not params.fits(n) and not params.fits(n - 1)
            and len({(d.dtype, tuple(d.shape[1:])) for d in data}) == 1)


def _is_structure(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return all(_is_structure(v) for v in value)
    if isinstance(value, dict):
        return all(_is_structure(v) for v in value.values())
    return False



@dataclass(frozen=True)
class ForwardParams:
    """What ``forward`` takes: how many positional inputs (required, with defaults),
    whether it has ``*args``/``**kwargs``, and every parameter's name."""

    required: int
    positional: int
    var_positional: bool
    var_keyword: bool
    names: tuple

    @staticmethod
    def of(model: torch.nn.Module) -> "ForwardParams":
        """From ``model.forward``; for a Nano model, from the signature it was traced with."""
        from nano.runtimes.structure import InputSignature

        signature = getattr(model, "signature", None)
        if isinstance(signature, InputSignature):
            pos = [n for n, k in signature.params if k in ("positional", "positional_only")]
            return ForwardParams(sum(n not in signature.defaulted for n in pos), len(pos),
                                 any(k == "var_positional" for _, k in signature.params),
                                 any(k == "var_keyword" for _, k in signature.params),
                                 tuple(n for n, k in signature.params
                                       if k not in ("var_positional", "var_keyword")))
        try:
            params = list(inspect.signature(model.forward).parameters.values())
        except (TypeError, ValueError):
            return ForwardParams(1, 1, True, False, ())
        pos = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return ForwardParams(sum(p.default is p.empty for p in pos), len(pos),
                             any(p.kind == p.VAR_POSITIONAL for p in params),
                             any(p.kind == p.VAR_KEYWORD for p in params),
                             tuple(p.name for p in params
                                   if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)))

    def called_as(self, call: tuple[tuple, dict]) -> "ForwardParams":
        """These parameters as the user's sample call uses them: a sample of ``k``
        positional inputs says the model takes exactly ``k``. A batch of two tensors is
        then two inputs, not an input and a target, for a forward whose parameters all
        have defaults (transformers' ``(input_ids, attention_mask)``)."""
        args, kwargs = call
        if kwargs or not args:
            return self
        return replace(self, required=len(args), positional=len(args), var_positional=False)

    def fits(self, n: int) -> bool:
        return self.required <= n and (n <= self.positional or self.var_positional)

    def describe(self) -> str:
        if self.var_positional:
            return f"at least {self.required} input(s)"
        if self.required == self.positional:
            return f"{self.required} input(s)"
        return f"{self.required} to {self.positional} inputs"


def split_batch(batch: Any, params: ForwardParams, name: str = "data") -> tuple[tuple, Any]:
    """``((args, kwargs), target or None)`` of one batch, matched against ``params``."""
    if isinstance(batch, dict):
        inputs = {k: v for k, v in batch.items() if k not in TARGET_KEYS}
        target = next((batch[k] for k in TARGET_KEYS if k in batch), None)
        unknown = [k for k in inputs if k not in params.names]
        if unknown and not params.var_keyword:
            raise DataMismatch(f"{name} does not fit the model's inputs: its batches have "
                               f"key(s) {unknown} that forward() does not take (it takes "
                               f"{', '.join(params.names)})")
        return ((), inputs), target
    batch = tuple(batch)
    n = len(batch)
    if (n == 2 and isinstance(batch[0], (tuple, list)) and not hasattr(batch[0], "_fields")
            and len(batch[0]) > 0 and params.fits(len(batch[0]))):
        return (tuple(batch[0]), {}), batch[1]  # ((inputs...), target)
    if params.var_positional and params.required == 0:
        return (batch, {}), None
    if n >= 2 and params.fits(n - 1):
        return (batch[:-1], {}), batch[-1]  # (inputs..., target)
    if params.fits(n):
        return (batch, {}), None
    raise DataMismatch(f"{name} does not fit the model's inputs: forward() takes "
                       f"{params.describe()}, {name}'s batches hold {n} "
                       f"({describe_values(batch)})")


def sample_call(model: torch.nn.Module, input_sample: Any,
                name: str = "input_sample") -> tuple[tuple, dict]:
    """``input_sample`` as an ``(args, kwargs)`` call: a tensor, a tuple of inputs, a dict of
    keyword inputs, an explicit ``(args, kwargs)`` pair, or a DataLoader (its first batch,
    without its target)."""
    from nano.runtimes.structure import normalize_sample

    if input_sample is None or isinstance(input_sample, (torch.Tensor, tuple, list, dict)):
        return normalize_sample(input_sample)
    batch = as_batches(input_sample, name, limit=1)[0]
    return split_batch(batch, ForwardParams.of(model), name)[0]


def call(model: Callable[..., Any], sample: tuple) -> Any:
    """Call ``model`` on an ``(args, kwargs)`` sample."""
    args, kwargs = sample
    return model(*args, **kwargs)


def describe_values(value: Any) -> str:
    """Shapes and dtypes of the tensors in ``value``, e.g. ``float32 (4, 30), int64 (4,)``."""
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).replace('torch.', '')} {tuple(value.shape)}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {describe_values(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe_values(v) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return inner if len(value) == 1 else f"({inner})"
    return repr(value)


def first_layer(model: torch.nn.Module) -> Optional[str]:
    """What the model's first weighted layer expects, e.g. ``fc (Linear) expects 32 features``."""
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            return f"its first layer {name} (Linear) expects {m.in_features} input features"
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            return f"its first layer {name} ({type(m).__name__}) expects {m.in_channels} channels"
        if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
            return (f"its first layer {name} ({type(m).__name__}) expects integer ids below "
                    f"{m.num_embeddings}")
        if isinstance(m, (torch.nn.RNNBase,)):
            return f"its first layer {name} ({type(m).__name__}) expects {m.input_size} features"
    return None


def check_fits(model: torch.nn.Module, sample: tuple, name: str) -> Any:
    """Run ``model`` (an eval copy) on ``sample``; a failure is one ``DataMismatch`` line
    naming ``name``, the shapes given and what the first layer expects. Returns the output."""
    args, kwargs = sample
    try:
        with torch.no_grad():
            return model(*args, **kwargs)
    except Exception as e:
        given = describe_values(args) if args else ""
        if kwargs:
            given = ", ".join(filter(None, [given, describe_values(kwargs)]))
        hint = first_layer(model)
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataMismatch(f"{name} does not fit the model's inputs: given {given}; "
                           f"{hint + '; ' if hint else ''}forward() raised "
                           f"{type(e).__name__}: {message}") from e
