"""Map a model's calling convention and output structure to flat tensor lists and back.

Graph runtimes (ONNX Runtime, OpenVINO, TorchScript) take and return flat lists
of tensors. ``InputSignature`` binds ``model(*args, **kwargs)`` to named tensor
inputs in ``forward``'s parameter order; an output *spec* (plain JSON) records
the nesting of tuples, lists, dicts and ModelOutput-like classes so results come
back exactly as the original module returned them, even in a process that never
imported the original class.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

# Output specs --------------------------------------------------------------------


def _class_path(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: Optional[str]):
    if not path:
        return None
    module, _, qualname = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    except Exception:  # the class may not exist where the model is loaded: fall back
        return None


def output_spec(value: Any) -> dict:
    """Describe the nesting of ``value`` (tensors inside tuples/lists/dicts) as JSON-able data."""
    if isinstance(value, torch.Tensor):
        return {"t": "tensor", "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, dict):
        cls = None if type(value) is dict else _class_path(value)
        return {"t": "dict", "cls": cls, "keys": list(value.keys()),
                "items": [output_spec(v) for v in value.values()]}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return {"t": "namedtuple", "cls": _class_path(value), "keys": list(value._fields),
                "items": [output_spec(v) for v in value]}
    if isinstance(value, (tuple, list)):
        return {"t": type(value).__name__ if type(value) in (tuple, list) else "tuple",
                "items": [output_spec(v) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"t": "const", "value": value}
    raise TypeError(f"unsupported output type {type(value).__name__}: Nano handles tensors "
                    f"nested in tuples, lists and dicts")


def flatten_output(value: Any) -> list[torch.Tensor]:
    """The tensors of an output, depth first, in the order ``output_spec`` lists them."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in flatten_output(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in flatten_output(v)]
    return []


def count_tensors(spec: dict) -> int:
    """How many tensors an output with this spec holds."""
    if spec["t"] == "tensor":
        return 1
    return sum(count_tensors(s) for s in spec.get("items", []))


def unflatten_output(spec: dict, tensors: Sequence[torch.Tensor], cast: bool = True) -> Any:
    """Rebuild the original output structure from flat tensors (inverse of flatten_output).

    With ``cast``, floating tensors are cast back to the dtype the original
    returned (a bf16 run still hands back float32 if the original did).
    """
    it = iter(tensors)

    def build(s):
        kind = s["t"]
        if kind == "tensor":
            t = next(it)
            if not isinstance(t, torch.Tensor):
                t = torch.as_tensor(t)
            want = getattr(torch, s["dtype"], None)
            if cast and want is not None and t.dtype != want and t.is_floating_point():
                t = t.to(want)
            return t
        if kind == "const":
            return s["value"]
        items = [build(x) for x in s["items"]]
        if kind in ("dict", "namedtuple"):
            cls = _import_class(s.get("cls"))
            data = dict(zip(s["keys"], items))
            if kind == "namedtuple":
                return cls(*items) if cls is not None else tuple(items)
            if cls is not None:
                try:
                    return cls(**data)
                except Exception:
                    return data
            return data
        return list(items) if kind == "list" else tuple(items)

    result = build(spec)
    leftover = next(it, None)
    if leftover is not None:
        raise RuntimeError("runtime returned more outputs than the original model")
    return result


# Input signatures ----------------------------------------------------------------


@dataclass
class InputSignature:
    """How ``model(*args, **kwargs)`` maps onto named tensor inputs.

    ``params`` are forward's parameter names in order (a ``*args`` parameter
    expands to ``name_0, name_1, ...``); ``tensor_names`` the ones that carry
    tensors; ``constants`` non-tensor arguments fixed at trace time.
    """

    params: list
    tensor_names: list
    constants: dict = field(default_factory=dict)
    var_positional: Optional[str] = None

    @staticmethod
    def from_sample(model: torch.nn.Module, args: tuple, kwargs: dict) -> "InputSignature":
        """Bind a sample call to ``model.forward``'s parameters."""
        try:
            sig = inspect.signature(model.forward)
        except (TypeError, ValueError):
            sig = None
        if sig is None or any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()) and kwargs:
            if kwargs:
                raise TypeError("cannot bind keyword inputs: forward() has no inspectable "
                                "signature; pass inputs positionally")
            names = [f"input_{i}" for i in range(len(args))]
            return InputSignature(names, [n for n, a in zip(names, args)
                                          if isinstance(a, torch.Tensor)],
                                  {n: a for n, a in zip(names, args)
                                   if not isinstance(a, torch.Tensor)})
        bound = sig.bind(*args, **kwargs)
        params, tensors, constants, var_pos = [], [], {}, None
        for name, value in bound.arguments.items():
            kind = sig.parameters[name].kind
            if kind == inspect.Parameter.VAR_POSITIONAL:
                var_pos = name
                for i, v in enumerate(value):
                    sub = f"{name}_{i}"
                    params.append(sub)
                    (tensors.append(sub) if isinstance(v, torch.Tensor) else
                     constants.__setitem__(sub, v))
                continue
            if kind == inspect.Parameter.VAR_KEYWORD:
                raise TypeError("**kwargs in forward() is not supported for tracing; name the "
                                "inputs as parameters")
            params.append(name)
            if isinstance(value, torch.Tensor):
                tensors.append(name)
            else:
                constants[name] = value
        return InputSignature(params, tensors, constants, var_pos)

    def bind(self, args: tuple, kwargs: dict) -> dict:
        """Map a call's arguments to parameter names (no defaults are filled in)."""
        if self.var_positional is None and len(args) > len(self.params):
            raise TypeError(f"the model takes {len(self.params)} inputs "
                            f"({', '.join(self.params)}) but {len(args)} were given")
        named = {}
        for name, value in zip(self.params, args):
            named[name] = value
        if self.var_positional is not None:
            for i, value in enumerate(args[len(named):], start=len(named)):
                named[f"{self.var_positional}_{i}"] = value
        for name, value in kwargs.items():
            if name in named:
                raise TypeError(f"got multiple values for input {name!r}")
            if name not in self.params:
                raise TypeError(f"unexpected input {name!r}; the model takes "
                                f"{', '.join(self.params)}")
            named[name] = value
        return named

    def flatten(self, args: tuple, kwargs: dict) -> list[torch.Tensor]:
        """The call's tensor inputs, in ``tensor_names`` order; checks the constants."""
        named = self.bind(args, kwargs)
        missing = [n for n in self.tensor_names if n not in named]
        if missing:
            raise TypeError(f"missing input(s) {', '.join(missing)}; the model was traced with "
                            f"{', '.join(self.tensor_names)}")
        for name, value in self.constants.items():
            if name in named and not _same_constant(named[name], value):
                raise ValueError(f"input {name!r} was {value!r} when the model was traced and "
                                 f"is baked into it; got {named[name]!r}")
        flat = []
        for name in self.tensor_names:
            value = named[name]
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"input {name!r} must be a tensor, got {type(value).__name__}")
            flat.append(value)
        return flat

    def rebuild(self, flat: Sequence[torch.Tensor]) -> tuple[tuple, dict]:
        """Inverse of flatten: positional args for ``*args`` items, keywords for the rest."""
        named = dict(self.constants)
        named.update(zip(self.tensor_names, flat))
        args, kwargs = [], {}
        for name in self.params:
            if name not in named:
                continue
            if self.var_positional and name.startswith(self.var_positional + "_"):
                args.append(named[name])
            else:
                kwargs[name] = named[name]
        if args:  # positional *args force the named ones before them to be positional too
            head = [kwargs.pop(n) for n in self.params if n in kwargs and
                    self.params.index(n) < self.params.index(f"{self.var_positional}_0")]
            args = head + args
        return tuple(args), kwargs

    def to_json(self) -> dict:
        consts = {k: v for k, v in self.constants.items()
                  if v is None or isinstance(v, (bool, int, float, str))}
        return {"params": self.params, "tensor_names": self.tensor_names, "constants": consts,
                "var_positional": self.var_positional}

    @staticmethod
    def from_json(data: dict) -> "InputSignature":
        return InputSignature(list(data["params"]), list(data["tensor_names"]),
                              dict(data.get("constants", {})), data.get("var_positional"))


def _same_constant(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return a is b


class FlatModule(torch.nn.Module):
    """Wrap a module so it takes flat tensors and returns a flat tuple (what exporters want)."""

    def __init__(self, module: torch.nn.Module, signature: InputSignature):
        super().__init__()
        self.module = module
        self.signature = signature

    def forward(self, *flat):
        args, kwargs = self.signature.rebuild(flat)
        return tuple(flatten_output(self.module(*args, **kwargs)))


def normalize_sample(sample) -> tuple[tuple, dict]:
    """``input_sample`` as (args, kwargs): a tensor, a tuple/list of args, a dict of kwargs,
    or an explicit ``(args_tuple, kwargs_dict)`` pair."""
    if isinstance(sample, torch.Tensor):
        return (sample,), {}
    if isinstance(sample, dict):
        return (), dict(sample)
    if (isinstance(sample, tuple) and len(sample) == 2 and isinstance(sample[0], tuple)
            and isinstance(sample[1], dict)):
        return sample[0], dict(sample[1])
    if isinstance(sample, (tuple, list)):
        return tuple(sample), {}
    raise TypeError(f"input_sample must be a tensor, a tuple of inputs or a dict of keyword "
                    f"inputs, got {type(sample).__name__}")
